//! Host leases: how hosts sharing a database tell a live host from a dead one.
//!
//! Every host records itself in table `hosts` with a lease (`lease_secs`,
//! default 15 s) and renews it every third of that. On Postgres, where
//! several hosts share one database, each scheduling host also sweeps after
//! every renewal: the executions that a host whose lease ran out left
//! `queued` or `running` are marked `crashed` (and re-run where the job has
//! `retry_on_crash`), exactly once whichever host sweeps first.
//!
//! A host that finds its own lease ran out (it was paused, or cut off from
//! the database, for longer than the lease) records itself again, then
//! cancels the executions still running here that another host's sweep took
//! meanwhile: the store refuses their outcomes anyway (an execution no longer
//! `queued` or `running` is never overwritten). Executions nobody took keep
//! running.
//!
//! Leases are timed by the database's clock on Postgres, so the hosts' own
//! clocks need not agree.

use std::time::Duration;

use actix::Addr;
use tokio::sync::oneshot;

use crate::actors::loader::{AllSupervisors, GetSupervisor, Loader};
use crate::actors::repository::{MarkCrashed, Repository};
use crate::actors::supervisor::{CancelRun, RetryCrashed, Snapshot};
use crate::model::ExecutionRecord;
use crate::store::Store;

/// The default lease, in seconds.
pub const DEFAULT_LEASE_SECS: u64 = 15;

/// What the lease task needs.
pub(crate) struct LeaseSetup {
    pub store: Store,
    pub repo: Addr<Repository>,
    pub loader: Addr<Loader>,
    pub node: String,
    pub lease: Duration,
    /// Whether to sweep other hosts' executions (scheduling hosts on Postgres).
    pub sweep: bool,
}

/// The running lease task.
pub(crate) struct LeaseTask {
    stop: oneshot::Sender<()>,
    task: actix_rt::task::JoinHandle<()>,
}

impl LeaseTask {
    /// Stops renewing and waits until a renewal under way has ended, so that
    /// nothing records the host again after it leaves the table.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts renewing the lease until [`LeaseTask::stop`] (or until the task's
/// handle is dropped).
pub(crate) fn spawn(setup: LeaseSetup) -> LeaseTask {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = actix_rt::spawn(async move {
        let period = setup.lease / 3;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                () = actix_rt::time::sleep(period) => {}
            }
            renew(&setup).await;
            if setup.sweep {
                sweep(&setup).await;
            }
        }
    });
    LeaseTask { stop, task }
}

async fn renew(s: &LeaseSetup) {
    match s.store.heartbeat(&s.node, s.lease).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::error!(
                node = %s.node,
                lease_secs = s.lease.as_secs_f64(),
                "this host's lease ran out (it was paused or cut off from the database for longer than the lease); \
                 recording it again"
            );
            // Live again first: a sweep from now on leaves this host's
            // executions alone, and one that came before shows below.
            if let Err(e) = s.store.register_host(&s.node, env!("CARGO_PKG_VERSION"), s.lease).await {
                tracing::warn!(error = %e, "cannot record this host again");
                return;
            }
            cancel_taken_over(s).await;
        }
        Err(e) => tracing::warn!(error = %e, "cannot renew this host's lease"),
    }
}

/// Cancels the executions running here that another host has meanwhile
/// marked crashed: their outcomes would be refused anyway.
async fn cancel_taken_over(s: &LeaseSetup) {
    let Ok(supervisors) = s.loader.send(AllSupervisors).await else { return };
    for (_, supervisor) in supervisors {
        let Ok(snapshot) = supervisor.send(Snapshot).await else { continue };
        for (id, _) in snapshot.running {
            match s.store.get_execution(id).await {
                Ok(Some(e)) if e.status.is_final() => {
                    tracing::warn!(
                        job = %e.job_name,
                        execution = %id,
                        status = %e.status,
                        "cancelling: another host settled this execution while this host's lease had run out"
                    );
                    let _ = supervisor.send(CancelRun { id }).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, execution = %id, "cannot read an execution's status"),
            }
        }
    }
}

async fn sweep(s: &LeaseSetup) {
    match s.repo.send(MarkCrashed { own: s.node.clone() }).await {
        Ok(Ok(crashed)) if !crashed.is_empty() => {
            tracing::warn!(count = crashed.len(), "executions of a host whose lease ran out marked crashed");
            retry_crashed(&s.loader, crashed).await;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot look for executions of dead hosts"),
        Err(e) => tracing::warn!(error = %e, "cannot look for executions of dead hosts"),
    }
}

/// Hands crashed executions to their jobs' supervisors, which re-run them
/// where the job has `retry_on_crash`.
pub(crate) async fn retry_crashed(loader: &Addr<Loader>, crashed: Vec<ExecutionRecord>) {
    for e in crashed {
        if let Ok(Some(s)) = loader.send(GetSupervisor { name: e.job_name.clone() }).await {
            s.do_send(RetryCrashed {
                id: e.id,
                scheduled_for: e.scheduled_for,
                attempt: e.attempt,
                parent: e.parent_id,
                args: e.args,
            });
        }
    }
}
