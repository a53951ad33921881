//! The launcher: one background worker, connected to no database, that starts a dispatcher
//! for each database `workflow.databases` lists once that database exists, and stops the
//! dispatcher of a database taken off the list. It reads the list again on reload
//! (SIGHUP), so adding a database needs no restart, and while a listed database is missing
//! it looks for it every second (in `pg_database`, a shared catalog it can read without a
//! database), so one created later gets its dispatcher within seconds and a missing one
//! costs one log line, never a worker restarted in a loop.
//!
//! Dispatchers are dynamic workers the postmaster never restarts on its own: the launcher
//! does, `RESTART_AFTER` after one stops (a `pg_terminate_backend`, an error). After a
//! crash of any backend the postmaster forgets them, resets shared memory and restarts the
//! launcher, which starts them all again; a launcher restarted while dispatchers still run
//! (it was terminated itself) finds them in their slots and keeps them.

use super::{BACKEND_TYPE, RESTART_AFTER};
use crate::{config, wake};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// What `pg_stat_activity.backend_type` shows for the launcher.
pub const LAUNCHER_TYPE: &str = "workflow launcher";
/// How often the launcher looks again while a listed database has no dispatcher.
const RECHECK: Duration = Duration::from_secs(1);
/// How often it looks when every listed database has one: for a database renamed or
/// dropped under its dispatcher.
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

/// A dispatcher the launcher runs (or found running) in a slot.
struct Serving {
    database: pg_sys::Oid,
    /// `None` for a dispatcher a previous launcher started.
    handle: Option<DynamicBackgroundWorker>,
    /// Asked to stop: its database left the list.
    stopping: bool,
}

#[derive(PartialEq)]
enum Running {
    Yes(i32),
    Starting,
    No,
}

impl Serving {
    fn running(&self, slot: usize) -> Running {
        match &self.handle {
            Some(handle) => match handle.pid() {
                Ok(pid) => Running::Yes(pid),
                Err(BackgroundWorkerStatus::NotYetStarted) => Running::Starting,
                Err(_) => Running::No,
            },
            None => match wake::occupant(slot) {
                Some((pid, _)) => Running::Yes(pid),
                None => Running::No,
            },
        }
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
        let slots = (0..wake::MAX_DISPATCHERS)
            .map(|slot| {
                wake::occupant(slot).map(|(_, database)| Serving {
                    database: pg_sys::Oid::from(database),
                    handle: None,
                    stopping: false,
                })
            })
            .collect();
        Launcher {
            slots,
            stopped_at: Vec::new(),
            missing_said: HashSet::new(),
            too_many_said: None,
            no_room_said: HashSet::new(),
        }
    }

    /// Brings the dispatchers in line with the list; returns when to look again.
    fn step(&mut self) -> Duration {
        let listed = self.listed();
        let wanted = resolve(&listed);
        let mut pending = false;

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
                Running::Yes(pid) => {
                    let listed = wanted.iter().any(|(_, oid)| *oid == Some(serving.database));
                    if !listed && !serving.stopping {
                        // SAFETY: signalling a dispatcher we started (or found in its slot);
                        // a never-restarted worker leaves on SIGTERM.
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                        serving.stopping = true;
                    }
                    pending |= serving.stopping;
                }
            }
        }

        for (name, oid) in &wanted {
            let Some(oid) = *oid else {
                if self.missing_said.insert(name.clone()) {
                    log!(
                        "workflow.databases lists database \"{name}\", which does not exist; \
                         its dispatcher starts within seconds of its creation"
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
            .filter(|slot| self.slots[*slot].is_none())
            .min_by_key(|slot| wake::assigned(*slot) != Some(oid.to_u32()));
        let Some(slot) = slot else {
            return false;
        };
        wake::assign(slot, oid.to_u32());
        let started = BackgroundWorkerBuilder::new(&format!("{BACKEND_TYPE} for {name}"))
            .set_type(BACKEND_TYPE)
            .set_library("workflow")
            .set_function("workflow_dispatcher_main")
            .set_argument(Some(pg_sys::Datum::from(slot)))
            .set_extra(name)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            // SAFETY: the launcher's own pid: the postmaster tells it when the worker stops.
            .set_notify_pid(unsafe { pg_sys::MyProcPid })
            .load_dynamic();
        match started {
            Ok(handle) => {
                self.no_room_said.remove(name);
                self.slots[slot] = Some(Serving {
                    database: oid,
                    handle: Some(handle),
                    stopping: false,
                });
                true
            }
            Err(_) => {
                if self.no_room_said.insert(name.to_string()) {
                    log!(
                        "workflow launcher could not start the dispatcher for database \"{name}\": \
                         no background worker slot is free (raise max_worker_processes); it tries again every second"
                    );
                }
                false
            }
        }
    }
}

/// Each listed database with its oid, `None` where it does not exist.
fn resolve(listed: &[String]) -> Vec<(String, Option<pg_sys::Oid>)> {
    let names: Vec<std::ffi::CString> = listed
        .iter()
        .map(|name| std::ffi::CString::new(name.as_str()).unwrap_or_default())
        .collect();
    let oids: Vec<pg_sys::Oid> = BackgroundWorker::transaction(|| {
        names
            .iter()
            // SAFETY: a catalog lookup inside a transaction; missing_ok returns InvalidOid.
            .map(|name| unsafe { pg_sys::get_database_oid(name.as_ptr(), true) })
            .collect()
    });
    listed
        .iter()
        .cloned()
        .zip(oids)
        .map(|(name, oid)| (name, (oid != pg_sys::InvalidOid).then_some(oid)))
        .collect()
}
