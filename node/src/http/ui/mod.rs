//! The status page: `GET /ui` (the whole page) and `GET /ui/live` (its
//! live part, which the page's script swaps in once a second). One
//! renderer, here, for both, so the page reads the same with or without
//! JavaScript; the styles, the script and the map are in the binary, so
//! it needs no network beyond the node.

mod world;

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::status::cluster_view;
use crate::state::NodeState;
use crate::status::{ClusterStatus, LinkCell, NodeCard, LINK_SILENT_MS};

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");
/// The map: longitudes -180..180, latitudes 80..-60 (no one runs a region
/// further south), one unit a degree.
const MAP_NORTH: f64 = 80.0;
const MAP_HEIGHT: f64 = 140.0;

/// `GET /ui`.
pub async fn page(State(state): State<NodeState>, headers: HeaderMap) -> Response {
    let view = cluster_view(&state, &headers).await;
    let mut html = String::with_capacity(32 << 10);
    let title = escape(&view.served_by);
    let _ = write!(
        html,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>geocache · {title}</title><noscript><meta http-equiv=refresh content=5></noscript>\
         <style>{STYLE}</style></head><body data-updates=0>\
         <header><h1>geocache</h1><span class=soft>status as seen from <b>{title}</b></span></header>\
         <main id=live>"
    );
    live_part(&mut html, &view);
    let _ = write!(html, "</main><script>{SCRIPT}</script></body></html>");
    html_response(html)
}

/// `GET /ui/live`.
pub async fn live(State(state): State<NodeState>, headers: HeaderMap) -> Response {
    let view = cluster_view(&state, &headers).await;
    let mut html = String::with_capacity(24 << 10);
    live_part(&mut html, &view);
    html_response(html)
}

fn html_response(html: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html)
        .into_response()
}

fn live_part(html: &mut String, view: &ClusterStatus) {
    summary(html, view);
    html.push_str("<section><h2>Map</h2>");
    map(html, view);
    html.push_str("</section><section><h2>Replication lag</h2>");
    lag_table(html, view);
    html.push_str("</section><section class=wide><h2>Nodes</h2>");
    node_table(html, view);
    html.push_str("</section><section class=wide><h2>Settings of this node</h2>");
    settings(html, view);
    html.push_str("</section>");
}

fn summary(html: &mut String, view: &ClusterStatus) {
    let up = view.nodes.iter().filter(|n| n.state == "self" || n.state == "up").count();
    let _ = write!(
        html,
        "<section class=\"wide summary\" data-nodes={} data-regions={} data-converged={}>{} in {}, \
         {up} up in the membership of {}. ",
        view.nodes.len(),
        view.regions.len(),
        view.converged,
        counted(view.nodes.len(), "node"),
        counted(view.regions.len(), "region"),
        escape(&view.served_by),
    );
    if view.converged {
        html.push_str("<span class=ok>Converged</span>: every node sees every other and none is behind.");
    } else {
        let cut: std::collections::BTreeSet<String> = view
            .links
            .iter()
            .filter(|l| l.up < l.pairs)
            .map(|l| {
                let (a, b) = if l.from < l.to { (&l.from, &l.to) } else { (&l.to, &l.from) };
                format!("{} – {}", escape(a), escape(b))
            })
            .collect();
        html.push_str("<span class=bad>Not converged</span>");
        if !cut.is_empty() {
            let _ = write!(html, ": cut between {}", cut.into_iter().collect::<Vec<_>>().join(", "));
        }
        let behind: u64 = view.links.iter().map(|l| l.behind_writes).sum();
        if behind > 0 {
            let _ = write!(html, "; {behind} writes not yet applied everywhere");
        }
        html.push('.');
    }
    html.push_str("</section>");
}

fn project(lat: f64, lon: f64) -> (f64, f64) {
    (lon.clamp(-180.0, 180.0) + 180.0, (MAP_NORTH - lat).clamp(0.0, MAP_HEIGHT))
}

fn land_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let mut d = String::new();
        for outline in world::LAND {
            for (i, (lon, lat)) in outline.iter().enumerate() {
                let (x, y) = project(f64::from(*lat), f64::from(*lon));
                let _ = write!(d, "{}{x:.0} {y:.0}", if i == 0 { "M" } else { "L" });
            }
            d.push('Z');
        }
        d
    })
}

fn map(html: &mut String, view: &ClusterStatus) {
    let _ = write!(
        html,
        "<svg class=map viewBox=\"0 0 360 {MAP_HEIGHT}\" role=img aria-label=\"regions on a world map\">\
         <path class=\"land\" d=\"{}\"/>",
        land_path()
    );
    let links = links_by_pair(view);
    for (i, a) in view.regions.iter().enumerate() {
        for b in &view.regions[i + 1..] {
            let cells: Vec<&LinkCell> = [(&a.name, &b.name), (&b.name, &a.name)]
                .iter()
                .filter_map(|(from, to)| links.get(&(from.as_str(), to.as_str())).copied())
                .collect();
            let cut = cells.iter().any(|l| l.up < l.pairs);
            let (x1, y1) = project(a.lat, a.lon);
            let (x2, y2) = project(b.lat, b.lon);
            let _ = write!(
                html,
                "<line class=\"link{}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\"/>",
                if cut { " cut" } else { "" }
            );
            let lags: Vec<String> =
                cells.iter().filter_map(|l| l.lag_p50_ms).map(|ms| format!("{ms}")).collect();
            let label = if cut {
                "cut".to_string()
            } else if lags.is_empty() {
                String::new()
            } else {
                format!("{} ms", lags.join(" / "))
            };
            let _ = write!(
                html,
                "<text class=\"lag\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                (x1 + x2) / 2.0,
                (y1 + y2) / 2.0 - 1.5
            );
        }
    }
    for region in &view.regions {
        let (x, y) = project(region.lat, region.lon);
        let _ = write!(
            html,
            "<circle class=\"region\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"1.2\"/><text x=\"{:.1}\" y=\"{:.1}\">{} {}/{}</text>",
            x + 2.5,
            y - 2.5,
            escape(&region.name),
            region.up,
            region.nodes
        );
        let nodes: Vec<&NodeCard> = view.nodes.iter().filter(|n| n.region == region.name).collect();
        for (i, n) in nodes.iter().enumerate() {
            let angle = std::f64::consts::TAU * i as f64 / nodes.len().max(1) as f64;
            let _ = write!(
                html,
                "<circle class=\"state-{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.1\"><title>{} ({})</title></circle>",
                escape(&n.state),
                x + 3.0 * angle.cos(),
                y + 3.0 * angle.sin(),
                escape(&n.name),
                escape(&n.state)
            );
        }
    }
    html.push_str("</svg>");
}

fn lag_table(html: &mut String, view: &ClusterStatus) {
    let links = links_by_pair(view);
    html.push_str(
        "<p class=soft>Median time from a write to its apply, over the last 10 s, as the receiving region's \
         nodes measured it (largest in brackets), and the round trip. Rows write, columns receive.</p>\
         <table class=lag><tr><th>from \\ to</th>",
    );
    for r in &view.regions {
        let _ = write!(html, "<th>{}</th>", escape(&r.name));
    }
    html.push_str("</tr>");
    for from in &view.regions {
        let _ = write!(html, "<tr><th>{}</th>", escape(&from.name));
        for to in &view.regions {
            let Some(l) = links.get(&(from.name.as_str(), to.name.as_str())) else {
                html.push_str("<td></td>");
                continue;
            };
            let attrs = format!(
                "data-from=\"{}\" data-to=\"{}\" data-lag-ms=\"{}\"",
                escape(&l.from),
                escape(&l.to),
                l.lag_p50_ms.map(|v| v.to_string()).unwrap_or_default()
            );
            if l.pairs == 0 {
                let _ = write!(html, "<td class=idle {attrs}>–</td>");
            } else if l.up < l.pairs {
                let _ = write!(
                    html,
                    "<td class=cut {attrs} title=\"{} of {} node pairs heard from each other directly in the last {} s (1 s per member in larger clusters)\">\
                     cut ({}/{})</td>",
                    l.up,
                    l.pairs,
                    LINK_SILENT_MS / 1_000,
                    l.up,
                    l.pairs
                );
            } else {
                let lag = match (l.lag_p50_ms, l.lag_max_ms) {
                    (Some(p50), Some(max)) => format!("{p50} ms ({max})"),
                    _ => "no writes".to_string(),
                };
                let rtt = l.rtt_ms.map(|r| format!(" <span class=soft>rtt {r}</span>")).unwrap_or_default();
                let behind = if l.behind_writes > 0 {
                    format!(" <span class=state-down>{} behind</span>", l.behind_writes)
                } else {
                    String::new()
                };
                let _ = write!(html, "<td class=num {attrs}>{lag}{rtt}{behind}</td>");
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

/// The cells by `(from, to)`: one lookup each, not a scan (there are as
/// many cells as region pairs).
fn links_by_pair(view: &ClusterStatus) -> std::collections::HashMap<(&str, &str), &LinkCell> {
    view.links.iter().map(|l| ((l.from.as_str(), l.to.as_str()), l)).collect()
}

fn node_table(html: &mut String, view: &ClusterStatus) {
    html.push_str(
        "<table class=nodes><tr><th>node</th><th>region</th><th>state</th><th>seen up by</th>\
         <th>writes/s</th><th>reads/s</th><th>applied/s</th><th>hit ratio</th><th>memory</th>\
         <th>entries</th><th>conflicts</th><th>uptime</th></tr>",
    );
    for n in &view.nodes {
        let _ = write!(
            html,
            "<tr data-node=\"{}\" data-state=\"{}\"><td>{}</td><td>{}</td><td class=\"state-{}\">{}</td>\
             <td class=num>{} of {}</td>",
            escape(&n.name),
            escape(&n.state),
            escape(&n.name),
            escape(&n.region),
            escape(&n.state),
            escape(&n.state),
            n.seen_up_by,
            n.observers
        );
        match &n.report {
            Some(r) => {
                let rate = |v: Option<f64>| v.map_or_else(|| "…".to_string(), |v| format!("{v:.0}"));
                let c = r.counters;
                let reads = c.hits + c.misses;
                let hit_ratio = if reads == 0 {
                    "–".to_string()
                } else {
                    format!("{:.0} %", 100.0 * c.hits as f64 / reads as f64)
                };
                let used = if r.max_memory_bytes == 0 {
                    0.0
                } else {
                    r.memory_bytes as f64 / r.max_memory_bytes as f64
                };
                let _ = write!(
                    html,
                    "<td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{hit_ratio}</td>\
                     <td><span class=bar><span style=\"width:{:.1}%\"></span></span>{} of {}</td>\
                     <td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
                    rate(n.rates.map(|r| r.writes)),
                    rate(n.rates.map(|r| r.reads)),
                    rate(n.rates.map(|r| r.remote_applied)),
                    (used * 100.0).min(100.0),
                    bytes(r.memory_bytes),
                    bytes(r.max_memory_bytes),
                    r.entries,
                    c.conflicts,
                    duration(r.uptime_s)
                );
            }
            None => html.push_str("<td colspan=8 class=soft>no answer</td></tr>"),
        }
    }
    html.push_str("</table>");
}

fn settings(html: &mut String, view: &ClusterStatus) {
    let Some(own) = view.nodes.iter().find(|n| n.state == "self").and_then(|n| n.report.as_ref()) else {
        return;
    };
    let _ = write!(
        html,
        "<details><summary>{} {} · {} · {}</summary><table>",
        escape(&own.name),
        escape(&own.version),
        escape(&own.kind),
        own.http
    );
    for (name, value) in &own.settings {
        let _ = write!(html, "<tr><th>{}</th><td>{}</td></tr>", escape(name), escape(value));
    }
    html.push_str("</table></details>");
}

/// `1 node`, `6 nodes`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

/// Text for HTML: the five characters that could end an element or an
/// attribute, escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_cluster_cannot_open_an_element() {
        assert_eq!(escape("<script>\"x\"&'"), "&lt;script&gt;&quot;x&quot;&amp;&#39;");
    }

    #[test]
    fn every_outline_projects_inside_the_map() {
        for outline in world::LAND {
            assert!(outline.len() >= 3);
            for (lon, lat) in outline.iter() {
                let (x, y) = project(f64::from(*lat), f64::from(*lon));
                assert!((0.0..=360.0).contains(&x) && (0.0..=MAP_HEIGHT).contains(&y), "{lon} {lat}");
            }
        }
    }

    #[test]
    fn sizes_and_durations_read_as_a_person_writes_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(3_600), "60 min");
        assert_eq!(duration(90_000), "25 h");
    }
}
