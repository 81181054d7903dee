//! What the status page remembers between requests: the nodes seen in
//! earlier views (so a node that went down still shows, as down) and the
//! last assembled view (so many open pages cost one round of requests to
//! the peers per interval, not one each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::status::{ClusterStatus, Counters, MemberStatus, Rates};

/// Most nodes remembered; past this the one seen least recently goes.
pub const REMEMBERED_MAX: usize = 256;
/// A node no view has listed for this long is forgotten: a restarted node
/// comes back under the same name within it.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(600);
/// How long an assembled view is served again.
pub const VIEW_REUSED_FOR: Duration = Duration::from_millis(500);

/// The memory of the status page; shared by every request of a node.
#[derive(Default)]
pub struct StatusBook {
    remembered: Mutex<HashMap<String, (MemberStatus, Instant)>>,
    /// Each node's counters at the previous view, for its rates.
    counted: Mutex<HashMap<String, (Counters, Instant)>>,
    /// Held across one assembly, so concurrent pages wait for it.
    last: tokio::sync::Mutex<Option<(Instant, Arc<ClusterStatus>)>>,
}

impl StatusBook {
    /// Nothing remembered.
    pub fn new() -> StatusBook {
        StatusBook::default()
    }

    /// `members` were listed in a view at `now`.
    pub fn saw(&self, members: impl IntoIterator<Item = MemberStatus>, now: Instant) {
        let Ok(mut remembered) = self.remembered.lock() else { return };
        for m in members {
            if !remembered.contains_key(&m.name) && remembered.len() >= REMEMBERED_MAX {
                let stalest = remembered.iter().min_by_key(|(_, (_, at))| *at).map(|(n, _)| n.clone());
                if let Some(n) = stalest {
                    remembered.remove(&n);
                }
            }
            remembered.insert(m.name.clone(), (m, now));
        }
        remembered.retain(|_, (_, at)| now.saturating_duration_since(*at) < REMEMBERED_FOR);
    }

    /// Every node remembered, as last listed.
    pub fn remembered(&self) -> Vec<MemberStatus> {
        self.remembered.lock().map(|r| r.values().map(|(m, _)| m.clone()).collect()).unwrap_or_default()
    }

    /// `name`'s rates since its counters were last passed here, which
    /// `counters` (read at `now`) then replace.
    pub fn rates(&self, name: &str, counters: Counters, now: Instant) -> Option<Rates> {
        let mut counted = self.counted.lock().ok()?;
        if !counted.contains_key(name) && counted.len() >= REMEMBERED_MAX {
            counted.clear();
        }
        let previous = counted.insert(name.to_string(), (counters, now));
        let (before, at) = previous?;
        Rates::between(&before, &counters, now.saturating_duration_since(at).as_secs_f64())
    }

    /// The last view while it is fresh, else `assemble`'s, which is then
    /// kept; one assembly at a time.
    pub async fn view<F>(&self, assemble: F) -> Arc<ClusterStatus>
    where
        F: std::future::Future<Output = ClusterStatus>,
    {
        let mut last = self.last.lock().await;
        if let Some((_, view)) = last.as_ref().filter(|(at, _)| at.elapsed() < VIEW_REUSED_FOR) {
            return view.clone();
        }
        let view = Arc::new(assemble.await);
        *last = Some((Instant::now(), view.clone()));
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            region: "r".into(),
            state: "up".into(),
            http: "127.0.0.1:1".parse().unwrap(),
            lat: 0.0,
            lon: 0.0,
            rtt_ms: None,
            lag: None,
            behind_writes: None,
            heard_ms_ago: None,
        }
    }

    #[test]
    fn the_book_is_bounded_and_forgets_after_its_time() {
        let book = StatusBook::new();
        let start = Instant::now();
        book.saw((0..REMEMBERED_MAX + 10).map(|i| member(&format!("n{i}"))), start);
        assert_eq!(book.remembered().len(), REMEMBERED_MAX);
        book.saw([member("late")], start + REMEMBERED_FOR + Duration::from_secs(1));
        assert_eq!(book.remembered().iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["late"]);
    }
}
