//! One-way delays between regions from the great-circle distance.

use geocache_link_emulator::DelayModel;

use crate::scenario::Scenario;

/// One-way delay in microseconds between every pair of regions.
pub fn region_delays_us(scenario: &Scenario) -> Vec<Vec<u64>> {
    let net = &scenario.network;
    let model = DelayModel {
        fiber_km_per_ms: net.fiber_km_per_ms,
        path_inflation: net.path_inflation,
        lan_delay_ms: net.lan_delay_ms,
    };
    let regions = &scenario.regions;
    regions
        .iter()
        .map(|a| {
            regions
                .iter()
                .map(|b| {
                    if a.name == b.name {
                        return (net.lan_delay_ms * 1_000.0) as u64;
                    }
                    let ms = model.one_way_ms((a.lat, a.lon), (b.lat, b.lon));
                    (ms * 1_000.0).round() as u64
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sydney_to_frankfurt_follows_the_fiber_estimate() {
        let s = Scenario::from_toml(
            r#"
            name = "t"
            [[regions]]
            name = "sydney"
            lat = -33.87
            lon = 151.21
            nodes = 1
            [[regions]]
            name = "frankfurt"
            lat = 50.11
            lon = 8.68
            nodes = 1
            [workload]
            duration_s = 1
            ops_per_s_per_region = 1
            read_ratio = 0.5
            keys = 1
            "#,
        )
        .unwrap();
        let d = region_delays_us(&s);
        // 16,500 km x 1.5 / 200 km/ms = ~124 ms: the fiber estimate.
        assert!((115_000..135_000).contains(&d[0][1]), "{}", d[0][1]);
        assert_eq!(d[0][1], d[1][0]);
        assert_eq!(d[0][0], 250);
    }
}
