//! A `jsonb` value passed through as Postgres holds it.
//!
//! pgrx's `JsonB` turns every argument into text and then into a `serde_json::Value`, and
//! every value it hands back into text again for `jsonb_in`: four conversions and an
//! allocation per node for a document the extension only stores. `Document` keeps the
//! datum. Use `JsonB` only where the extension reads the document (headers).

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::nullable::Nullable;
use pgrx::pg_sys;
use pgrx::{FromDatum, IntoDatum};

/// A jsonb datum, valid in the memory context it came from: an argument for the duration
/// of the call; a value read through SPI only once [`Document::transfer`] has copied it
/// out of SPI's memory.
#[derive(Clone, Copy, Debug)]
pub struct Document(pg_sys::Datum);

pgrx::impl_sql_translatable!(Document, "jsonb");

impl Document {
    /// JSON `null`, the output of a step recorded without one.
    pub fn null() -> Self {
        // SAFETY: jsonb_in parses a NUL-terminated constant and returns a new datum in the
        // current memory context.
        let datum = unsafe {
            pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(c"null".as_ptr().into())])
        };
        Document(datum.expect("jsonb_in returns a value for 'null'"))
    }

    /// The document's size in bytes as Postgres stores it, uncompressed, without reading a
    /// TOASTed value.
    pub fn size(&self) -> usize {
        // SAFETY: the datum is a valid varlena (a jsonb) in a live memory context.
        let with_header = unsafe { pg_sys::toast_raw_datum_size(self.0) };
        with_header.saturating_sub(pg_sys::VARHDRSZ)
    }

    /// The document as JSON text (`jsonb_out`).
    pub fn to_text(self) -> String {
        // SAFETY: jsonb_out reads a valid jsonb datum and returns a palloc'd C string in the
        // current memory context, which is copied before it goes.
        unsafe {
            let text = pgrx::direct_function_call_as_datum(pg_sys::jsonb_out, &[Some(self.0)])
                .expect("jsonb_out returns a value");
            std::ffi::CStr::from_ptr(text.cast_mut_ptr::<std::ffi::c_char>())
                .to_string_lossy()
                .into_owned()
        }
    }

    /// Copies a value read through SPI into the caller's memory context, so that it
    /// outlives `SPI_finish`. Call inside the SPI connection that read it.
    pub fn transfer(self) -> Self {
        // SAFETY: called while connected to SPI (the documented contract); jsonb is a
        // variable-length type (typByVal false, typLen -1).
        Document(unsafe { pg_sys::SPI_datumTransfer(self.0, false, -1) })
    }
}

impl FromDatum for Document {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(Document(datum))
    }
}

impl IntoDatum for Document {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: a jsonb argument is a varlena datum; Document only keeps it.
unsafe impl<'fcx> ArgAbi<'fcx> for Document {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller (pgrx's wrapper) passes a jsonb argument.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: as above.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

// SAFETY: the datum lives in the function's memory context or the caller's.
unsafe impl BoxRet for Document {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}
