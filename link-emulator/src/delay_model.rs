//! One-way delay between two places from their great-circle distance.

use geo::{Distance, Haversine, Point};

/// How distance becomes delay: light in fiber, over paths longer than
/// great circles, plus the delay inside a region.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DelayModel {
    /// Speed of light in fiber, km per ms.
    pub fiber_km_per_ms: f64,
    /// Real paths are longer than great circles by this factor.
    pub path_inflation: f64,
    /// One-way delay between nodes of one region, ms.
    pub lan_delay_ms: f64,
}

impl Default for DelayModel {
    /// 200 km/ms (light in glass), paths 1.5x the great circle (the
    /// figure published measurements of internet paths give), 0.25 ms
    /// inside a region.
    fn default() -> Self {
        DelayModel { fiber_km_per_ms: 200.0, path_inflation: 1.5, lan_delay_ms: 0.25 }
    }
}

impl DelayModel {
    /// One-way delay in ms between `(lat, lon)` points `a` and `b`; the
    /// LAN delay alone for one place.
    pub fn one_way_ms(&self, a: (f64, f64), b: (f64, f64)) -> f64 {
        let km = Haversine.distance(Point::new(a.1, a.0), Point::new(b.1, b.0)) / 1_000.0;
        km * self.path_inflation / self.fiber_km_per_ms + self.lan_delay_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn montreal_to_frankfurt_is_the_fiber_estimate() {
        // ~5,850 km x 1.5 / 200 km/ms + 0.25 ms = ~44 ms.
        let ms = DelayModel::default().one_way_ms((45.50, -73.57), (50.11, 8.68));
        assert!((43.0..45.5).contains(&ms), "{ms}");
    }

    #[test]
    fn one_place_is_the_lan_delay() {
        assert_eq!(DelayModel::default().one_way_ms((1.0, 2.0), (1.0, 2.0)), 0.25);
    }
}
