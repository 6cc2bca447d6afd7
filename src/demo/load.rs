//! The load generator: steady user traffic to every service's `/work`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use super::fleet::Inner;

/// Requests in flight per service beyond which ticks are skipped, so a
/// slow service does not pile up requests.
const MAX_IN_FLIGHT: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `rate` requests per second to each service, round-robin over the
/// instances that take traffic (see `Inner::load_targets`). Each request
/// runs on its own task so slow answers do not lower the rate.
pub(crate) async fn run(inner: Arc<Inner>, rate: f64) {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut ticker = tokio::time::interval(period);
    // After a stall, carry on at the normal pace instead of bursting: a
    // burst would exceed instance capacity by itself.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut cursors: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_flight: BTreeMap<String, Arc<Semaphore>> = BTreeMap::new();
    loop {
        ticker.tick().await;
        for (service, ports) in inner.load_targets() {
            if ports.is_empty() {
                continue;
            }
            let cursor = cursors.entry(service.clone()).or_insert(0);
            let port = ports[*cursor % ports.len()];
            *cursor = cursor.wrapping_add(1);
            let limit = in_flight
                .entry(service)
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)));
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                continue;
            };
            let client = inner.client.clone();
            tokio::spawn(async move {
                let url = format!("http://127.0.0.1:{port}/work");
                let _ = client.hit(&url, REQUEST_TIMEOUT).await;
                drop(permit);
            });
        }
    }
}
