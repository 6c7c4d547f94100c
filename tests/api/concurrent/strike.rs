//! The concurrent model's faults, struck while the clients run.

use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use tokio::sync::Mutex as AsyncMutex;

use super::{Fault, slots};
use crate::{
    fault_kit::{PrivateRedis, SlotgateProcess},
    helpers::TestApp,
};

pub async fn strike(fault: Fault, app: &TestApp, redis: &PrivateRedis, replica: &AsyncMutex<SlotgateProcess>) {
    match fault {
        Fault::LoseKey { slot, key } => {
            let key = app.key(&slots()[slot], ["seats", "users", "ids", "holds", "waiters"][key]);
            let _ = redis::cmd("DEL").arg(key).query_async::<()>(&mut redis.connection().await).await;
        }
        Fault::Flush => {
            let _ = redis::cmd("FLUSHALL").query_async::<()>(&mut redis.connection().await).await;
        }
        Fault::Stall { millis } => redis.busy(Duration::from_millis(millis)).await,
        Fault::KillReplica => {
            let mut replica = replica.lock().await;
            replica.kill();
            replica.restart().await;
        }
        Fault::CutDatabase => {
            let _ = app
                .database()
                .await
                .batch_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .await;
        }
    }
}
