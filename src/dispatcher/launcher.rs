//! The launcher: one background worker, connected to no database, that starts a dispatcher
//! for each database `workflow.databases` lists once that database exists and allows
//! connections, and stops the dispatcher of a database taken off the list. It reads the
//! list again on reload (SIGHUP), so adding a database needs no restart, and while a listed
//! database is missing it looks for it every second (in `pg_database`, a shared catalog it
//! can read without a database), so one created later gets its dispatcher within seconds
//! and a missing one costs one log line, never a worker restarted in a loop.
//!
//! Dispatchers are dynamic workers the postmaster never restarts on its own: the launcher
//! does, `RESTART_AFTER` after one stops (a `pg_terminate_backend`, an error). After a
//! crash of any backend the postmaster forgets them, resets shared memory and restarts the
//! launcher, which starts them all again. A dispatcher it finds in a slot and did not start
//! (a launcher terminated and restarted while dispatchers ran) it adopts; two dispatchers
//! never share a slot (the second to arrive leaves, see `wake::occupy`).

use super::{BACKEND_TYPE, RESTART_AFTER};
use crate::{config, wake};
use pgrx::PgMemoryContexts;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// What `pg_stat_activity.backend_type` shows for the launcher.
pub const LAUNCHER_TYPE: &str = "workflow launcher";
/// How often the launcher looks again while a listed database has no dispatcher.
const RECHECK: Duration = Duration::from_secs(1);
/// How often it looks when every listed database has one: for a database dropped, or set
/// to refuse connections, under its dispatcher.
const IDLE_RECHECK: Duration = Duration::from_secs(10);

/// Registers the launcher; only from `_PG_init` while shared_preload_libraries loads.
pub fn register() {
    BackgroundWorkerBuilder::new(LAUNCHER_TYPE)
        .set_type(LAUNCHER_TYPE)
        .set_library("workflow")
        .set_function("workflow_launcher_main")
        .enable_spi_access()
        // G5: a standby has no dispatcher; after promotion, the new primary starts them.
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn workflow_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    wake::publish_launcher_latch();
    let mut launcher = Launcher::adopting_running_dispatchers();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloading the configuration on the main thread, outside a transaction.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let recheck = launcher.step();
        if !BackgroundWorker::wait_latch(Some(recheck)) {
            break;
        }
    }
    // At shutdown the postmaster stops the dispatchers itself. Exit 1, so that after a
    // pg_terminate_backend the postmaster starts the launcher again.
    // SAFETY: proc_exit is how a backend ends.
    unsafe { pg_sys::proc_exit(1) };
}

/// A dispatcher the launcher registered: Postgres' handle, allocated in the launcher's
/// top memory context and freed with this.
struct Registered(*mut pg_sys::BackgroundWorkerHandle);

impl Registered {
    /// Registers the worker `builder` describes; `None` when no background worker slot is
    /// free (`max_worker_processes`).
    fn register(builder: &BackgroundWorkerBuilder) -> Option<Registered> {
        let mut worker: pg_sys::BackgroundWorker = builder.into();
        let mut handle: *mut pg_sys::BackgroundWorkerHandle = std::ptr::null_mut();
        // SAFETY: the handle is allocated in the current memory context, made the top one
        // so that it lives until dropped; Postgres sets it when registration succeeds.
        let registered = unsafe {
            PgMemoryContexts::TopMemoryContext
                .switch_to(|_| pg_sys::RegisterDynamicBackgroundWorker(&mut worker, &mut handle))
        };
        (registered && !handle.is_null()).then_some(Registered(handle))
    }

    fn running(&self) -> Running {
        let mut pid: pg_sys::pid_t = 0;
        // SAFETY: a handle Postgres returned, not freed yet.
        match unsafe { pg_sys::GetBackgroundWorkerPid(self.0, &mut pid) } {
            pg_sys::BgwHandleStatus::BGWH_STARTED => Running::Yes,
            pg_sys::BgwHandleStatus::BGWH_NOT_YET_STARTED => Running::Starting,
            _ => Running::No,
        }
    }

    /// Asks the postmaster to stop the worker and never start it again.
    fn terminate(&self) {
        // SAFETY: a handle Postgres returned, not freed yet.
        unsafe { pg_sys::TerminateBackgroundWorker(self.0) };
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // SAFETY: allocated by RegisterDynamicBackgroundWorker, freed once.
        unsafe { pg_sys::pfree(self.0.cast()) };
    }
}

/// A dispatcher the launcher runs (or found running) in a slot.
struct Serving {
    database: pg_sys::Oid,
    /// `None` for a dispatcher the launcher found in its slot.
    registered: Option<Registered>,
    /// Asked to stop: its database left the list.
    stopping: bool,
}

#[derive(PartialEq)]
enum Running {
    Yes,
    Starting,
    No,
}

impl Serving {
    fn running(&self, slot: usize) -> Running {
        match &self.registered {
            Some(registered) => registered.running(),
            None => match wake::occupant(slot) {
                Some(_) => Running::Yes,
                None => Running::No,
            },
        }
    }

    fn stop(&mut self, slot: usize) {
        match &self.registered {
            Some(registered) => registered.terminate(),
            None => {
                if let Some((pid, _)) = wake::occupant(slot) {
                    // SAFETY: signalling the dispatcher in our slot, which leaves on SIGTERM
                    // and is never restarted by the postmaster.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
        self.stopping = true;
    }
}

struct Launcher {
    slots: Vec<Option<Serving>>,
    /// When the dispatcher of a database last stopped, so it is not restarted in a loop.
    stopped_at: Vec<(pg_sys::Oid, Instant)>,
    /// Listed databases that do not exist, said once each until they do.
    missing_said: HashSet<String>,
    /// The list already warned about for being too long.
    too_many_said: Option<Vec<String>>,
    /// The databases refused a worker for want of `max_worker_processes`, said once each.
    no_room_said: HashSet<String>,
}

impl Launcher {
    fn adopting_running_dispatchers() -> Launcher {
        let mut launcher = Launcher {
            slots: (0..wake::MAX_DISPATCHERS).map(|_| None).collect(),
            stopped_at: Vec::new(),
            missing_said: HashSet::new(),
            too_many_said: None,
            no_room_said: HashSet::new(),
        };
        launcher.adopt();
        launcher
    }

    /// Takes on the dispatchers running in slots it holds no entry for.
    fn adopt(&mut self) {
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            if entry.is_none()
                && let Some((_, database)) = wake::occupant(slot)
            {
                *entry = Some(Serving {
                    database: pg_sys::Oid::from(database),
                    registered: None,
                    stopping: false,
                });
            }
        }
    }

    /// Brings the dispatchers in line with the list; returns when to look again.
    fn step(&mut self) -> Duration {
        let listed = self.listed();
        let wanted = resolve(&listed);
        let mut pending = false;
        self.adopt();

        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(serving) = entry else { continue };
            match serving.running(slot) {
                Running::No => {
                    self.stopped_at.retain(|(oid, _)| *oid != serving.database);
                    self.stopped_at.push((serving.database, Instant::now()));
                    *entry = None;
                    pending = true;
                }
                Running::Starting => pending = true,
                Running::Yes => {
                    let listed = wanted.iter().any(|(_, oid)| *oid == Some(serving.database));
                    if !listed && !serving.stopping {
                        serving.stop(slot);
                    }
                    pending |= serving.stopping;
                }
            }
        }

        for (name, oid) in &wanted {
            let Some(oid) = *oid else {
                if self.missing_said.insert(name.clone()) {
                    log!(
                        "workflow.databases lists database \"{name}\", which does not exist or does not allow \
                         connections; its dispatcher starts within seconds of either changing"
                    );
                }
                pending = true;
                continue;
            };
            self.missing_said.remove(name);
            if self.slots.iter().flatten().any(|s| s.database == oid) {
                continue;
            }
            let restarts_at = self
                .stopped_at
                .iter()
                .find(|(stopped, _)| *stopped == oid)
                .map(|(_, at)| *at + RESTART_AFTER);
            if restarts_at.is_some_and(|at| at > Instant::now()) {
                pending = true;
                continue;
            }
            pending |= !self.start(name, oid);
        }
        if pending { RECHECK } else { IDLE_RECHECK }
    }

    /// The databases to serve, as listed, warning once about those beyond the slots.
    fn listed(&mut self) -> Vec<String> {
        let mut listed = config::databases();
        if listed.len() > wake::MAX_DISPATCHERS {
            if self.too_many_said.as_ref() != Some(&listed) {
                warning!(
                    "workflow.databases lists {} databases; only the first {} get a dispatcher",
                    listed.len(),
                    wake::MAX_DISPATCHERS
                );
                self.too_many_said = Some(listed.clone());
            }
            listed.truncate(wake::MAX_DISPATCHERS);
        }
        listed
    }

    /// Starts the dispatcher of `name` in a vacant slot; false if it could not.
    fn start(&mut self, name: &str, oid: pg_sys::Oid) -> bool {
        // A slot that served this database before keeps its state (a drop's request to
        // stay away); otherwise the first vacant one.
        let slot = (0..self.slots.len())
            .filter(|slot| self.slots[*slot].is_none() && wake::occupant(*slot).is_none())
            .min_by_key(|slot| wake::assigned(*slot) != Some(oid.to_u32()));
        let Some(slot) = slot else {
            return false;
        };
        let previous = wake::assigned(slot).unwrap_or(0);
        wake::assign(slot, oid.to_u32());
        let builder = BackgroundWorkerBuilder::new(&format!("{BACKEND_TYPE} for {name}"))
            .set_type(BACKEND_TYPE)
            .set_library("workflow")
            .set_function("workflow_dispatcher_main")
            .set_argument(Some(pg_sys::Datum::from(slot)))
            .set_extra(name)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            // SAFETY: the launcher's own pid: the postmaster tells it when the worker stops.
            .set_notify_pid(unsafe { pg_sys::MyProcPid });
        let Some(registered) = Registered::register(&builder) else {
            wake::unassign(slot, previous);
            if self.no_room_said.insert(name.to_string()) {
                log!(
                    "workflow launcher could not start the dispatcher for database \"{name}\": \
                     no background worker slot is free (raise max_worker_processes); it tries again every second"
                );
            }
            return false;
        };
        self.no_room_said.remove(name);
        self.slots[slot] = Some(Serving {
            database: oid,
            registered: Some(registered),
            stopping: false,
        });
        true
    }
}

/// Each listed database with its oid, `None` where it does not exist or does not allow
/// connections (a dispatcher could only fail there).
fn resolve(listed: &[String]) -> Vec<(String, Option<pg_sys::Oid>)> {
    let databases = BackgroundWorker::transaction(connectable_databases);
    listed
        .iter()
        .map(|name| {
            let oid = databases
                .iter()
                .find(|(database, _)| database == name)
                .map(|(_, oid)| *oid);
            (name.clone(), oid)
        })
        .collect()
}

/// The databases that allow connections and are not half dropped (`datconnlimit` -2),
/// with their oids. A heap scan of `pg_database`, as the autovacuum launcher makes: a
/// backend connected to no database may read a shared catalog, but not through the
/// caches, which would read `pg_class`.
fn connectable_databases() -> Vec<(String, pg_sys::Oid)> {
    let mut databases = Vec::new();
    // SAFETY: a catalog scan inside the transaction the caller opened, ended and closed
    // before returning; each tuple is read while the scan holds it.
    unsafe {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let relation = pg_sys::table_open(pg_sys::DatabaseRelationId, lock);
        let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let database = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            if (*database).datallowconn && (*database).datconnlimit != -2 {
                let name = std::ffi::CStr::from_ptr((*database).datname.data.as_ptr());
                databases.push((name.to_string_lossy().into_owned(), (*database).oid));
            }
        }
        pg_sys::heap_endscan(scan);
        pg_sys::table_close(relation, lock);
    }
    databases
}
