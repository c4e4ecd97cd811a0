//! `--metrics ADDR:PORT`: every counter of a running command in the
//! Prometheus (OpenMetrics) text format at `/metrics`.
//!
//! The format comes from prometheus-client; the endpoint is one thread of
//! tiny_http. The command's loop hands its counters over now and then
//! ([`Metrics::update`]); a scrape never waits on the loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashSet;
use std::net::SocketAddr as Addr;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::CliError;

/// `--metrics ADDR:PORT`, shared by recv, send and chat.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MetricsArgs {
    /// Serve every counter in the Prometheus text format at
    /// http://ADDR:PORT/metrics (e.g. 127.0.0.1:9100; port 0 picks one,
    /// shown with -v). Off by default.
    #[arg(env = "MCSEC_METRICS", long, value_name = "ADDR:PORT")]
    pub(crate) metrics: Option<SocketAddr>,
}

/// The names an outbox serves, in [`Metrics::update`]'s terms.
pub(crate) const SEND_COUNTERS: [&str; 4] = ["messages", "datagrams", "bytes", "batches"];

/// How often the loop's counters are copied over, at most.
const UPDATE_EVERY: Duration = Duration::from_millis(250);

/// A running metrics endpoint and the counters it serves.
pub(crate) struct Metrics {
    counters: Vec<(&'static str, Counter)>,
    last_update: Option<Instant>,
    subscribers: Option<Subscribers>,
}

/// A relay's figures per subscriber, labelled `subscriber="ADDR:PORT"`:
/// a subscriber that is forgotten loses its series.
struct Subscribers {
    forwarded: Family<Labels, Counter>,
    dropped_cap: Family<Labels, Counter>,
    dropped_send: Family<Labels, Counter>,
    last_seen: Family<Labels, Gauge>,
    count: Gauge,
    known: HashSet<Addr>,
}

type Labels = Vec<(&'static str, String)>;

/// One subscriber's figures, for [`Metrics::update_subscribers`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubscriberRow {
    pub(crate) addr: Addr,
    pub(crate) forwarded: u64,
    pub(crate) dropped_cap: u64,
    pub(crate) dropped_send: u64,
    /// Seconds since the Unix epoch.
    pub(crate) last_seen: i64,
}

fn grow(counter: &Counter, value: u64) {
    // Counters only grow; a value that went down (never, for these) is
    // left where it was rather than wrapped.
    let delta = value.saturating_sub(counter.get());
    if delta > 0 {
        counter.inc_by(delta);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("counters", &self.counters.len())
            .finish()
    }
}

impl Metrics {
    /// Serves `names` (each `mcsec_NAME_total`) at `http://addr/metrics`.
    pub(crate) fn start(addr: SocketAddr, names: &[&'static str]) -> Result<Self, CliError> {
        Self::start_with(addr, names, false)
    }

    /// [`Metrics::start`], and a relay's per-subscriber series
    /// (`mcsec_subscriber_forwarded_total{subscriber="ADDR:PORT"}`, ...,
    /// `mcsec_subscriber_last_seen_seconds`) and `mcsec_subscribers`.
    pub(crate) fn start_relay(addr: SocketAddr, names: &[&'static str]) -> Result<Self, CliError> {
        Self::start_with(addr, names, true)
    }

    fn start_with(
        addr: SocketAddr,
        names: &[&'static str],
        per_subscriber: bool,
    ) -> Result<Self, CliError> {
        let mut registry = Registry::with_prefix("mcsec");
        let mut counters = Vec::with_capacity(names.len());
        for name in names {
            let counter = Counter::default();
            registry.register(*name, help(name), counter.clone());
            counters.push((*name, counter));
        }
        let subscribers = per_subscriber.then(|| {
            let subs = Subscribers {
                forwarded: Family::default(),
                dropped_cap: Family::default(),
                dropped_send: Family::default(),
                last_seen: Family::default(),
                count: Gauge::default(),
                known: HashSet::new(),
            };
            for (name, help, family) in [
                (
                    "subscriber_forwarded",
                    "Copies the relay handed to the kernel for this subscriber",
                    &subs.forwarded,
                ),
                (
                    "subscriber_dropped_cap",
                    "Copies not sent to this subscriber for its rate cap",
                    &subs.dropped_cap,
                ),
                (
                    "subscriber_dropped_send",
                    "Copies for this subscriber the kernel refused (a full send buffer)",
                    &subs.dropped_send,
                ),
            ] {
                registry.register(name, help, family.clone());
            }
            registry.register(
                "subscriber_last_seen_seconds",
                "When this subscriber's last accepted request arrived, Unix time",
                subs.last_seen.clone(),
            );
            registry.register(
                "subscribers",
                "Subscribers the relay forwards to now",
                subs.count.clone(),
            );
            subs
        });
        let server = tiny_http::Server::http(addr).map_err(|e| {
            CliError::new(format!("--metrics {addr}: {e}"))
                .hint("pick a free port, on an address of this host (127.0.0.1:9100, say)")
        })?;
        let bound = server.server_addr();
        tracing::info!("metrics on http://{bound}/metrics");
        let registry = Arc::new(registry);
        std::thread::spawn(move || serve(&server, &registry));
        Ok(Self {
            counters,
            last_update: None,
            subscribers,
        })
    }

    /// Whether an update is due (250 ms since the last): lets a loop skip
    /// gathering its counters most of the time.
    pub(crate) fn due(&self) -> bool {
        self.last_update.is_none_or(|t| t.elapsed() >= UPDATE_EVERY)
    }

    /// Copies `values` over (at most every 250 ms, unless `now`): each
    /// counter takes the value its name has there.
    pub(crate) fn update(&mut self, values: &[(&'static str, u64)], now: bool) {
        if !now && self.last_update.is_some_and(|t| t.elapsed() < UPDATE_EVERY) {
            return;
        }
        self.last_update = Some(Instant::now());
        for (name, counter) in &self.counters {
            if let Some((_, value)) = values.iter().find(|(n, _)| n == name) {
                grow(counter, *value);
            }
        }
    }

    /// Copies a relay's subscribers over (with [`Metrics::update`]'s
    /// counters: call it right after, when that was due); those no longer
    /// listed lose their series.
    pub(crate) fn update_subscribers(&mut self, rows: &[SubscriberRow]) {
        let Some(subs) = self.subscribers.as_mut() else {
            return;
        };
        let labels = |a: &Addr| vec![("subscriber", a.to_string())];
        let now: HashSet<Addr> = rows.iter().map(|r| r.addr).collect();
        for gone in subs.known.difference(&now) {
            let l = labels(gone);
            subs.forwarded.remove(&l);
            subs.dropped_cap.remove(&l);
            subs.dropped_send.remove(&l);
            subs.last_seen.remove(&l);
        }
        for r in rows {
            let l = labels(&r.addr);
            grow(&subs.forwarded.get_or_create(&l), r.forwarded);
            grow(&subs.dropped_cap.get_or_create(&l), r.dropped_cap);
            grow(&subs.dropped_send.get_or_create(&l), r.dropped_send);
            subs.last_seen.get_or_create(&l).set(r.last_seen);
        }
        subs.count
            .set(i64::try_from(rows.len()).unwrap_or(i64::MAX));
        subs.known = now;
    }
}

/// Answers `GET /metrics` with the text format, anything else with 404.
fn serve(server: &tiny_http::Server, registry: &Registry) {
    for request in server.incoming_requests() {
        let (status, body, kind) =
            if *request.method() == tiny_http::Method::Get && request.url() == "/metrics" {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, registry) {
                    Ok(()) => (
                        200,
                        body,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                    Err(_) => (500, "encoding failed\n".into(), "text/plain"),
                }
            } else {
                (404, "mcsec serves /metrics\n".into(), "text/plain")
            };
        let mut response = tiny_http::Response::from_string(body).with_status_code(status);
        if let Ok(header) = tiny_http::Header::from_bytes(&b"Content-Type"[..], kind.as_bytes()) {
            response = response.with_header(header);
        }
        // A client that went away is its own problem, not the command's.
        let _ = request.respond(response);
    }
}

/// The HELP line of each counter.
fn help(name: &str) -> String {
    let text = match name {
        "delivered" => "Messages delivered (whole, verified, in the output)",
        "datagrams_read" => {
            "Datagrams taken from the socket, each opened, rejected or relay control"
        }
        "frames_opened" => "Frames that authenticated and passed every check",
        "oversize" => "Datagrams longer than --max-datagram",
        "malformed" => "Datagrams that are not mcsec version 2 frames",
        "unknown_key" => "Frames under a key ID the key file does not hold",
        "stale" => "Frames outside the allowed clock skew, or of a forgotten sender",
        "replayed" => "Frames whose seq was accepted before or is behind the window",
        "auth_failed" => {
            "Frames that failed authentication: forged, tampered or for another channel"
        }
        "sender_table_full" => "Authentic frames of new senders refused while the table was full",
        "unknown_body" => "Authentic frames with a body variant this version does not know",
        "bad_body" => "Authentic frames whose body does not decode",
        "frames_received" => "Distinct seqs that arrived, per sender",
        "lost" => "Seqs that never arrived (after a reorder allowance)",
        "duplicates" => "Seqs that arrived again",
        "reordered" => "Frames that arrived below their sender's newest seq",
        "kernel_drops" => "Datagrams the kernel dropped on the socket (receive buffer full)",
        "files_completed" => "Files received whole, SHA-256 checked",
        "frames_signed" => "Frames delivered under a trusted signature (--trust)",
        "sig_unsigned" => "Held frames of senders that never signed, dropped",
        "sig_bad" => "Manifests whose signature did not verify",
        "sig_forged" => "Frames whose hash differs from their signed manifest",
        "datagrams" => "Datagrams sent",
        "messages" => "Messages sent",
        "bytes" => "Bytes of datagrams sent (without IP and UDP headers)",
        "batches" => "Runs of datagrams handed to the kernel at once",
        "control_accepted" => "Relay requests accepted (subscribe, publish, unsubscribe, renewals)",
        "control_challenged" => "Relay requests answered with a cookie challenge",
        "expired" => "Relay subscribers and publishers forgotten for want of a renewal",
        "data_unauthorized" => "Datagrams to the relay from addresses that are not publishers",
        "published" => "Publishers' datagrams the relay sent into its group",
        "data_foreign" => {
            "Datagrams on the --upstream socket from another address than the upstream relay, dropped"
        }
        "data_bad_size" => "Datagrams to forward that were empty or over --max-datagram, dropped",
        "data_control" => {
            "Datagrams of a feed that start as relay control (\"mcr\"), never forwarded"
        }
        "forwarded" => "Copies the relay handed to the kernel, all subscribers together",
        "dropped_cap" => "Copies not sent for a subscriber's rate cap",
        "dropped_send" => "Copies the kernel refused (a full send buffer)",
        _ => mcsec::relay::ControlReject::ALL
            .iter()
            .find(|(_, n, _)| *n == name)
            .map_or("", |(_, _, help)| help),
    };
    if text.is_empty() {
        format!("mcsec counter {name} (see recv --help and SECURITY.md)")
    } else {
        text.to_owned()
    }
}
