//! The schedule of `walvault daemon`: which child process runs when.
//!
//! The daemon replaces Barman's `barman cron`, which starts `receive-wal` and archives every
//! queue once a minute. Here a queue is archived as soon as the host reports a change in it
//! (inotify), with a periodic sweep as a safety net for changes no event reports; long-running
//! children (`receive-wal` per streaming server, `serve`) are restarted with exponential
//! backoff when they exit; `check` runs on its own period.
//!
//! [`Schedule`] is a sans-IO state machine, as the rest of the core: the host feeds it what
//! happened ([`Schedule::queue_changed`], [`Schedule::exited`], [`Schedule::reconfigure`],
//! [`Schedule::shutdown`]) with the time from its monotonic clock in milliseconds, and carries
//! out the [`Action`]s that [`Schedule::poll_action`] returns, sleeping at most until
//! [`Schedule::next_wakeup`].
//!
//! Rules:
//! - one `archive-wal` per server at a time; a change reported while it runs makes it run
//!   again after it exits, so a file that arrived after its directory was listed is not left
//!   for the sweep;
//! - a failed `archive-wal` (an unreachable store, a rejected file) is not rerun at once on
//!   every event: it waits a backoff of 1 s doubling up to the sweep period, reset by a
//!   success;
//! - a long-running child that exits on its own waits a backoff of 1 s doubling up to 60 s
//!   before it starts again; one that ran for 60 s or more starts again after 1 s;
//! - after [`Schedule::shutdown`] nothing starts; long-running children are asked to stop and
//!   running `archive-wal` and `check` runs finish (their files are then archived, or still
//!   queued), so the host waits for [`Schedule::finished`].

use std::collections::BTreeMap;

/// A point on the host's monotonic clock, in milliseconds.
pub type Millis = u64;

/// Longest wait before a long-running child starts again; a run this long resets its backoff.
pub const MAX_RESTART_BACKOFF: Millis = 60_000;
/// First wait after a failure.
const FIRST_BACKOFF: Millis = 1_000;

/// A child process of the daemon.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    /// `archive-wal SERVER`: one run over the server's queues.
    Archive(String),
    /// `receive-wal SERVER`: streams until stopped.
    Receive(String),
    /// `check --all`: one run, for `serve`'s last-check results.
    Check,
    /// `serve`: the status API and dashboard, until stopped.
    Serve,
}

impl Task {
    /// Whether the task runs until it is stopped (as opposed to one run).
    pub fn long_running(&self) -> bool {
        matches!(self, Task::Receive(_) | Task::Serve)
    }
}

/// What the daemon should run, from the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Servers whose queues (`incoming/`, `streaming/`) are archived.
    pub archive: Vec<String>,
    /// Long-running children, each with a fingerprint of the settings it was started with: a
    /// child whose fingerprint changes on [`Schedule::reconfigure`] is restarted.
    pub services: Vec<(Task, u64)>,
    /// Milliseconds between sweeps of every queue.
    pub sweep_every: Millis,
    /// Milliseconds between `check` runs, or none.
    pub check_every: Option<Millis>,
}

/// What the host must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start this child.
    Start(Task),
    /// Ask this long-running child to stop (SIGTERM); it reports its exit as any other.
    Stop(Task),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ServiceState {
    /// Starts at this time.
    Waiting(Millis),
    /// Running since this time.
    Running(Millis),
    /// Asked to stop; starts again at once when `restart`.
    Stopping { restart: bool },
}

#[derive(Clone, Debug)]
struct Service {
    fingerprint: u64,
    state: ServiceState,
    backoff: Millis,
    /// No longer in the plan: removed once it has exited.
    retired: bool,
    /// A stop request is owed to the host.
    stop_owed: bool,
}

#[derive(Clone, Debug)]
struct Archiver {
    running: bool,
    dirty: bool,
    not_before: Millis,
    backoff: Millis,
    retired: bool,
}

impl Default for Archiver {
    fn default() -> Self {
        Archiver {
            running: false,
            dirty: false,
            not_before: 0,
            backoff: FIRST_BACKOFF,
            retired: false,
        }
    }
}

/// The daemon's schedule. See the module documentation for its rules.
#[derive(Clone, Debug)]
pub struct Schedule {
    archivers: BTreeMap<String, Archiver>,
    services: BTreeMap<Task, Service>,
    sweep_every: Millis,
    next_sweep: Millis,
    check_every: Option<Millis>,
    next_check: Millis,
    check_running: bool,
    stopping: bool,
}

impl Schedule {
    /// A schedule that archives every queue, starts every service and runs `check` now.
    pub fn new(plan: Plan, now: Millis) -> Schedule {
        let mut schedule = Schedule {
            archivers: BTreeMap::new(),
            services: BTreeMap::new(),
            sweep_every: plan.sweep_every.max(1),
            next_sweep: now,
            check_every: None,
            next_check: now,
            check_running: false,
            stopping: false,
        };
        schedule.reconfigure(plan, now);
        schedule
    }

    /// Applies a new plan (the configuration was reloaded): new servers are archived and new
    /// services started at once, removed ones retired, services whose fingerprint changed
    /// restarted. Every queue is swept, since the new settings may change what is archived.
    pub fn reconfigure(&mut self, plan: Plan, now: Millis) {
        for (name, archiver) in &mut self.archivers {
            archiver.retired = !plan.archive.contains(name);
        }
        for name in &plan.archive {
            let archiver = self.archivers.entry(name.clone()).or_default();
            archiver.retired = false;
            archiver.dirty = true;
        }
        self.archivers.retain(|_, a| !a.retired || a.running);

        for (task, service) in &mut self.services {
            if !plan.services.iter().any(|(t, _)| t == task) {
                service.retired = true;
                Self::ask_to_stop(service, false);
            }
        }
        for (task, fingerprint) in plan.services {
            if !task.long_running() {
                continue;
            }
            match self.services.get_mut(&task) {
                None => {
                    self.services.insert(
                        task,
                        Service {
                            fingerprint,
                            state: ServiceState::Waiting(now),
                            backoff: FIRST_BACKOFF,
                            retired: false,
                            stop_owed: false,
                        },
                    );
                }
                Some(service) => {
                    service.retired = false;
                    let changed = service.fingerprint != fingerprint;
                    service.fingerprint = fingerprint;
                    match service.state {
                        ServiceState::Running(_) if changed => Self::ask_to_stop(service, true),
                        ServiceState::Stopping { .. } => {
                            service.state = ServiceState::Stopping { restart: true };
                        }
                        // New settings deserve a prompt try.
                        ServiceState::Waiting(_) if changed => {
                            service.state = ServiceState::Waiting(now);
                            service.backoff = FIRST_BACKOFF;
                        }
                        _ => {}
                    }
                }
            }
        }
        self.services
            .retain(|_, s| !(s.retired && matches!(s.state, ServiceState::Waiting(_))));

        self.sweep_every = plan.sweep_every.max(1);
        self.next_sweep = now.saturating_add(self.sweep_every);
        if plan.check_every != self.check_every {
            self.next_check = now;
        }
        self.check_every = plan.check_every;
    }

    fn ask_to_stop(service: &mut Service, restart: bool) {
        match service.state {
            ServiceState::Running(_) => {
                service.state = ServiceState::Stopping { restart };
                service.stop_owed = true;
            }
            ServiceState::Stopping { .. } => service.state = ServiceState::Stopping { restart },
            ServiceState::Waiting(_) => {}
        }
    }

    /// Something changed in a queue of `server` (a file was written or moved in).
    pub fn queue_changed(&mut self, server: &str) {
        if let Some(archiver) = self.archivers.get_mut(server) {
            archiver.dirty = true;
        }
    }

    /// A child the host started has exited, successfully or not.
    pub fn exited(&mut self, task: &Task, success: bool, now: Millis) {
        match task {
            Task::Archive(server) => {
                let Some(archiver) = self.archivers.get_mut(server) else {
                    return;
                };
                archiver.running = false;
                if success {
                    archiver.backoff = FIRST_BACKOFF;
                    archiver.not_before = now;
                } else {
                    archiver.not_before = now.saturating_add(archiver.backoff);
                    archiver.backoff = archiver.backoff.saturating_mul(2).min(self.sweep_every);
                    // Tried again when the wait is over, event or not.
                    archiver.dirty = true;
                }
                if archiver.retired {
                    self.archivers.remove(server);
                }
            }
            Task::Check => {
                self.check_running = false;
                if let Some(every) = self.check_every {
                    self.next_check = now.saturating_add(every);
                }
            }
            Task::Receive(_) | Task::Serve => {
                let Some(service) = self.services.get_mut(task) else {
                    return;
                };
                service.stop_owed = false;
                match service.state {
                    ServiceState::Stopping { restart: true } if !service.retired => {
                        service.backoff = FIRST_BACKOFF;
                        service.state = ServiceState::Waiting(now);
                    }
                    ServiceState::Running(since) if !service.retired => {
                        if now.saturating_sub(since) >= MAX_RESTART_BACKOFF {
                            service.backoff = FIRST_BACKOFF;
                        }
                        service.state = ServiceState::Waiting(now.saturating_add(service.backoff));
                        service.backoff =
                            service.backoff.saturating_mul(2).min(MAX_RESTART_BACKOFF);
                    }
                    _ => {
                        self.services.remove(task);
                    }
                }
            }
        }
    }

    /// Stop: nothing starts any more; long-running children are asked to stop, one-shot runs
    /// finish.
    pub fn shutdown(&mut self) {
        self.stopping = true;
        for service in self.services.values_mut() {
            service.retired = true;
            Self::ask_to_stop(service, false);
        }
        self.services
            .retain(|_, s| !matches!(s.state, ServiceState::Waiting(_)));
    }

    /// Whether [`Schedule::shutdown`] was called and every child has exited.
    pub fn finished(&self) -> bool {
        self.stopping
            && !self.check_running
            && self.services.is_empty()
            && self.archivers.values().all(|a| !a.running)
    }

    /// The next thing to do at `now`, if any; call until it returns `None`.
    pub fn poll_action(&mut self, now: Millis) -> Option<Action> {
        for (task, service) in &mut self.services {
            if service.stop_owed {
                service.stop_owed = false;
                return Some(Action::Stop(task.clone()));
            }
        }
        if self.stopping {
            return None;
        }
        if now >= self.next_sweep {
            for archiver in self.archivers.values_mut() {
                archiver.dirty = true;
            }
            self.next_sweep = now.saturating_add(self.sweep_every);
        }
        for (task, service) in &mut self.services {
            if let ServiceState::Waiting(at) = service.state
                && now >= at
            {
                service.state = ServiceState::Running(now);
                return Some(Action::Start(task.clone()));
            }
        }
        for (server, archiver) in &mut self.archivers {
            if archiver.dirty
                && !archiver.running
                && !archiver.retired
                && now >= archiver.not_before
            {
                archiver.dirty = false;
                archiver.running = true;
                return Some(Action::Start(Task::Archive(server.clone())));
            }
        }
        if self.check_every.is_some() && !self.check_running && now >= self.next_check {
            self.check_running = true;
            return Some(Action::Start(Task::Check));
        }
        None
    }

    /// When [`Schedule::poll_action`] may next have something to do without an event, if
    /// ever (the host also wakes for events and exits).
    pub fn next_wakeup(&self) -> Option<Millis> {
        if self.stopping {
            return None;
        }
        let services = self.services.values().filter_map(|s| match s.state {
            ServiceState::Waiting(at) => Some(at),
            _ => None,
        });
        let archivers = self
            .archivers
            .values()
            .filter(|a| a.dirty && !a.running)
            .map(|a| a.not_before);
        let check = self
            .check_every
            .filter(|_| !self.check_running)
            .map(|_| self.next_check);
        let sweep = (!self.archivers.is_empty()).then_some(self.next_sweep);
        services.chain(archivers).chain(check).chain(sweep).min()
    }

    /// The tasks the schedule believes are running (for its tests).
    #[cfg(test)]
    fn running(&self) -> Vec<Task> {
        let services = self
            .services
            .iter()
            .filter(|(_, s)| !matches!(s.state, ServiceState::Waiting(_)))
            .map(|(t, _)| t.clone());
        let archivers = self
            .archivers
            .iter()
            .filter(|(_, a)| a.running)
            .map(|(s, _)| Task::Archive(s.clone()));
        services
            .chain(archivers)
            .chain(self.check_running.then_some(Task::Check))
            .collect()
    }

    /// When the long-running `task` starts again, if it is waiting to.
    pub fn restart_at(&self, task: &Task) -> Option<Millis> {
        match self.services.get(task)?.state {
            ServiceState::Waiting(at) => Some(at),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(archive: &[&str], receive: &[(&str, u64)]) -> Plan {
        Plan {
            archive: archive.iter().map(|s| (*s).to_owned()).collect(),
            services: receive
                .iter()
                .map(|(s, f)| (Task::Receive((*s).to_owned()), *f))
                .collect(),
            sweep_every: 30_000,
            check_every: None,
        }
    }

    fn drain(s: &mut Schedule, now: Millis) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action(now)).collect()
    }

    fn start(task: Task) -> Action {
        Action::Start(task)
    }

    fn archive(server: &str) -> Task {
        Task::Archive(server.to_owned())
    }

    fn receive(server: &str) -> Task {
        Task::Receive(server.to_owned())
    }

    #[test]
    fn everything_starts_at_once_then_only_changed_queues_are_archived() {
        let mut s = Schedule::new(plan(&["a", "b"], &[("b", 1)]), 0);
        assert_eq!(
            drain(&mut s, 0),
            [
                start(receive("b")),
                start(archive("a")),
                start(archive("b"))
            ]
        );
        s.exited(&archive("a"), true, 10);
        s.exited(&archive("b"), true, 10);
        assert_eq!(drain(&mut s, 20), []);
        s.queue_changed("b");
        s.queue_changed("unknown");
        assert_eq!(drain(&mut s, 20), [start(archive("b"))]);
        // The sweep is the next thing without an event.
        assert_eq!(s.next_wakeup(), Some(30_000));
    }

    #[test]
    fn a_change_during_a_run_runs_it_again_once_it_exits() {
        let mut s = Schedule::new(plan(&["a"], &[]), 0);
        assert_eq!(drain(&mut s, 0), [start(archive("a"))]);
        s.queue_changed("a");
        s.queue_changed("a");
        assert_eq!(drain(&mut s, 5), [], "never two runs for one server");
        s.exited(&archive("a"), true, 50);
        assert_eq!(drain(&mut s, 50), [start(archive("a"))]);
        s.exited(&archive("a"), true, 60);
        assert_eq!(drain(&mut s, 60), []);
    }

    #[test]
    fn failed_runs_back_off_up_to_the_sweep_period_and_a_success_resets_it() {
        let mut s = Schedule::new(plan(&["a"], &[]), 0);
        let mut now = 0;
        let mut waits = Vec::new();
        assert_eq!(drain(&mut s, now), [start(archive("a"))]);
        for _ in 0..7 {
            s.exited(&archive("a"), false, now);
            let failed_at = now;
            s.queue_changed("a");
            assert_eq!(drain(&mut s, now), [], "no rerun on every event");
            // Wake when asked (a sweep may come first) until the retry starts.
            loop {
                now = s.next_wakeup().expect("a retry");
                match drain(&mut s, now).as_slice() {
                    [] => continue,
                    [action] => assert_eq!(*action, start(archive("a"))),
                    more => panic!("{more:?}"),
                }
                break;
            }
            waits.push(now - failed_at);
        }
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        s.exited(&archive("a"), true, now);
        s.queue_changed("a");
        assert_eq!(drain(&mut s, now), [start(archive("a"))]);
        s.exited(&archive("a"), false, now);
        assert_eq!(s.next_wakeup(), Some(now + 1_000));
    }

    #[test]
    fn the_sweep_archives_every_queue_without_events() {
        let mut s = Schedule::new(plan(&["a", "b"], &[]), 0);
        drain(&mut s, 0);
        s.exited(&archive("a"), true, 1);
        s.exited(&archive("b"), true, 1);
        assert_eq!(drain(&mut s, 29_999), []);
        assert_eq!(
            drain(&mut s, 30_000),
            [start(archive("a")), start(archive("b"))]
        );
    }

    #[test]
    fn a_service_that_exits_restarts_with_backoff_reset_by_a_long_run() {
        let mut s = Schedule::new(plan(&[], &[("x", 1)]), 0);
        assert_eq!(drain(&mut s, 0), [start(receive("x"))]);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            now += 10;
            s.exited(&receive("x"), false, now);
            let at = s.restart_at(&receive("x")).expect("restarts");
            waits.push(at - now);
            assert_eq!(drain(&mut s, at - 1), []);
            now = at;
            assert_eq!(drain(&mut s, now), [start(receive("x"))]);
        }
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        // A clean exit is no different: a service is meant to run until stopped.
        now += MAX_RESTART_BACKOFF;
        s.exited(&receive("x"), true, now);
        assert_eq!(s.restart_at(&receive("x")), Some(now + 1_000));
    }

    #[test]
    fn shutdown_stops_services_lets_runs_finish_and_starts_nothing() {
        let mut s = Schedule::new(
            Plan {
                check_every: Some(60_000),
                ..plan(&["a"], &[("x", 1), ("y", 1)])
            },
            0,
        );
        assert_eq!(drain(&mut s, 0).len(), 4);
        s.exited(&receive("y"), false, 5);
        s.shutdown();
        s.queue_changed("a");
        assert_eq!(drain(&mut s, 10), [Action::Stop(receive("x"))]);
        assert_eq!(drain(&mut s, 100_000), []);
        assert_eq!(s.next_wakeup(), None);
        assert!(!s.finished());
        s.exited(&receive("x"), true, 20);
        s.exited(&Task::Check, true, 20);
        assert!(!s.finished(), "archive-wal still runs");
        s.exited(&archive("a"), true, 30);
        assert!(s.finished());
        assert_eq!(drain(&mut s, 100_000), []);
    }

    #[test]
    fn reload_adds_retires_and_restarts_what_changed() {
        let mut s = Schedule::new(plan(&["a", "b"], &[("a", 1), ("b", 1)]), 0);
        drain(&mut s, 0);
        s.exited(&archive("a"), true, 1);
        // b's archive-wal still runs when b leaves the configuration.
        s.reconfigure(plan(&["a", "c"], &[("a", 2), ("c", 1)]), 10);
        assert_eq!(
            drain(&mut s, 10),
            [
                Action::Stop(receive("a")),
                Action::Stop(receive("b")),
                start(receive("c")),
                start(archive("a")),
                start(archive("c")),
            ]
        );
        s.exited(&archive("b"), true, 11);
        s.queue_changed("b");
        assert_eq!(drain(&mut s, 12), [], "b is gone");
        s.exited(&receive("b"), true, 12);
        assert_eq!(drain(&mut s, 12), []);
        assert_eq!(s.restart_at(&receive("b")), None);
        // a restarts at once with its new settings, not after a backoff.
        s.exited(&receive("a"), true, 13);
        assert_eq!(drain(&mut s, 13), [start(receive("a"))]);
        let mut running = s.running();
        running.sort();
        assert_eq!(
            running,
            [archive("a"), archive("c"), receive("a"), receive("c")]
        );
    }

    #[test]
    fn check_runs_on_its_period_after_each_run() {
        let mut s = Schedule::new(
            Plan {
                check_every: Some(300_000),
                ..plan(&[], &[])
            },
            0,
        );
        assert_eq!(drain(&mut s, 0), [start(Task::Check)]);
        assert_eq!(drain(&mut s, 400_000), [], "one at a time");
        s.exited(&Task::Check, false, 400_000);
        assert_eq!(s.next_wakeup(), Some(700_000));
        assert_eq!(drain(&mut s, 700_000), [start(Task::Check)]);
    }
}
