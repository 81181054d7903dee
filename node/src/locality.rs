//! Which node should serve a client: the live nodes ranked by great-circle
//! distance from the client, or by the round trip measured from the node
//! answering. Pure: the HTTP handlers pass in the members they see.

use geo::{Distance, Haversine, Point};
use serde::Serialize;
use std::net::SocketAddr;
use thiserror::Error;

/// How to rank the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RankBy {
    /// Great-circle distance from the client's position.
    Distance,
    /// Round trip measured from the answering node (itself first, at 0).
    Rtt,
}

impl RankBy {
    /// Parses `distance` or `rtt`.
    pub fn parse(s: &str) -> Option<RankBy> {
        match s {
            "distance" => Some(RankBy::Distance),
            "rtt" => Some(RankBy::Rtt),
            _ => None,
        }
    }
}

/// A node a client could be sent to. Only live members are candidates:
/// callers leave out members that are down or suspected.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    /// Its origin id (this life's), hex.
    pub origin: String,
    /// Region name.
    pub region: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Where it serves HTTP.
    pub http: SocketAddr,
    /// Round trip from the answering node, whole milliseconds rounded up
    /// (at least 1 for a peer); 0 for the answering node itself, `None`
    /// while unmeasured.
    pub rtt_ms: Option<u64>,
}

/// A candidate with its distance from the client.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ranked {
    /// The node.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// Great-circle distance from the client, km.
    pub distance_km: f64,
}

/// A position is out of range.
#[derive(Debug, Error, PartialEq)]
pub enum PositionError {
    /// Latitude outside [-90, 90] or not a number.
    #[error("lat must be a number of degrees in [-90, 90], got {0}")]
    Latitude(String),
    /// Longitude outside [-180, 180] or not a number.
    #[error("lon must be a number of degrees in [-180, 180], got {0}")]
    Longitude(String),
}

/// A client position in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

impl Position {
    /// Parses and checks a latitude and a longitude given as text.
    ///
    /// # Errors
    ///
    /// [`PositionError`] naming the coordinate that is not a number in range.
    pub fn parse(lat: &str, lon: &str) -> Result<Position, PositionError> {
        let lat_value = lat.trim().parse::<f64>().ok().filter(|v| (-90.0..=90.0).contains(v));
        let lat_value = lat_value.ok_or_else(|| PositionError::Latitude(lat.to_owned()))?;
        let lon_value = lon.trim().parse::<f64>().ok().filter(|v| (-180.0..=180.0).contains(v));
        let lon_value = lon_value.ok_or_else(|| PositionError::Longitude(lon.to_owned()))?;
        Ok(Position { lat: lat_value, lon: lon_value })
    }

    /// Great-circle distance to a point, km.
    pub fn distance_km(self, lat: f64, lon: f64) -> f64 {
        Haversine.distance(Point::new(self.lon, self.lat), Point::new(lon, lat)) / 1_000.0
    }
}

/// Ranks candidates for a client at `from`, closest first. Ties (same
/// distance, same RTT) are broken by the next measure, then by origin id, so every
/// node answers the same for the same view.
pub fn rank(candidates: Vec<Candidate>, from: Position, by: RankBy) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = candidates
        .into_iter()
        .map(|c| {
            let distance_km = from.distance_km(c.lat, c.lon);
            Ranked { candidate: c, distance_km }
        })
        .collect();
    ranked.sort_by(|a, b| {
        let by_distance = a.distance_km.total_cmp(&b.distance_km);
        // Unmeasured RTTs rank after every measured one.
        let by_rtt = a.candidate.rtt_ms.unwrap_or(u64::MAX).cmp(&b.candidate.rtt_ms.unwrap_or(u64::MAX));
        let first = match by {
            RankBy::Distance => by_distance.then(by_rtt),
            RankBy::Rtt => by_rtt.then(by_distance),
        };
        first.then_with(|| a.candidate.origin.cmp(&b.candidate.origin))
    });
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, lat: f64, lon: f64, rtt_ms: Option<u64>) -> Candidate {
        Candidate {
            origin: id.into(),
            region: id.into(),
            lat,
            lon,
            http: "127.0.0.1:1".parse().unwrap(),
            rtt_ms,
        }
    }

    #[test]
    fn distance_ranks_by_great_circle() {
        let nodes = vec![
            node("sydney", -33.87, 151.21, Some(250)),
            node("frankfurt", 50.11, 8.68, Some(0)),
            node("virginia", 38.03, -78.48, Some(80)),
        ];
        // A client in New York.
        let ranked = rank(nodes, Position { lat: 40.71, lon: -74.0 }, RankBy::Distance);
        let order: Vec<_> = ranked.iter().map(|r| r.candidate.origin.as_str()).collect();
        assert_eq!(order, ["virginia", "frankfurt", "sydney"]);
        // New York - Virginia is about 480 km.
        assert!((400.0..560.0).contains(&ranked[0].distance_km), "{}", ranked[0].distance_km);
    }

    #[test]
    fn rtt_ranks_measured_first_then_by_distance() {
        let nodes = vec![
            node("far-fast", -33.87, 151.21, Some(5)),
            node("unmeasured", 40.7, -74.0, None),
            node("near-slow", 40.0, -74.0, Some(90)),
        ];
        let ranked = rank(nodes, Position { lat: 40.71, lon: -74.0 }, RankBy::Rtt);
        let order: Vec<_> = ranked.iter().map(|r| r.candidate.origin.as_str()).collect();
        assert_eq!(order, ["far-fast", "near-slow", "unmeasured"]);
    }

    #[test]
    fn positions_out_of_range_are_named() {
        assert_eq!(Position::parse("91", "0"), Err(PositionError::Latitude("91".into())));
        assert_eq!(Position::parse("0", "-180.5"), Err(PositionError::Longitude("-180.5".into())));
        assert_eq!(Position::parse("NaN", "0"), Err(PositionError::Latitude("NaN".into())));
        assert_eq!(Position::parse("x", "0"), Err(PositionError::Latitude("x".into())));
        assert_eq!(Position::parse("-33.5", " 151 "), Ok(Position { lat: -33.5, lon: 151.0 }));
    }
}
