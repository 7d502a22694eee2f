//! Peer scores in `node.db` (table `peer_scores`): what a restart must not forget about
//! a peer — its trust penalty, recent session failures, RTT, loss and announced cost.

use rusqlite::params;
use trellis_routing::scoring::ScoreState;
use trellis_routing::NodeId;

use crate::util::time::now_secs;

/// The table, created with the rest of the store's schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS peer_scores(peer TEXT PRIMARY KEY, rtt_us INTEGER NOT NULL,
  loss_ppm INTEGER NOT NULL, trust_penalty REAL NOT NULL, failures TEXT NOT NULL,
  cost INTEGER NOT NULL, at INTEGER NOT NULL);
";

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes `peer`'s state, taken now.
pub(super) fn put(
    tx: &rusqlite::Transaction<'_>,
    peer: &NodeId,
    state: &ScoreState,
) -> rusqlite::Result<()> {
    let failures: Vec<String> = state.failures_secs_ago.iter().map(u64::to_string).collect();
    tx.prepare_cached(
        "INSERT INTO peer_scores(peer, rtt_us, loss_ppm, trust_penalty, failures, cost, at)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(peer) DO UPDATE SET rtt_us=excluded.rtt_us, loss_ppm=excluded.loss_ppm,
           trust_penalty=excluded.trust_penalty, failures=excluded.failures,
           cost=excluded.cost, at=excluded.at",
    )?
    .execute(params![
        peer.as_str(),
        int(state.rtt_us),
        state.loss_ppm,
        state.trust_penalty,
        failures.join(" "),
        state.cost,
        int(now_secs()),
    ])?;
    Ok(())
}

/// Every stored state, aged by the time since it was written; rows that do not parse
/// are skipped (counted in the second value).
pub(super) fn load(
    conn: &rusqlite::Connection,
) -> rusqlite::Result<(Vec<(NodeId, ScoreState)>, usize)> {
    let mut stmt = conn.prepare(
        "SELECT peer, rtt_us, loss_ppm, trust_penalty, failures, cost, at FROM peer_scores",
    )?;
    let now = now_secs();
    let mut out = Vec::new();
    let mut skipped = 0;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, f64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, i64>(6)?,
        ))
    })? {
        let (peer, rtt_us, loss_ppm, penalty, failures, cost, at) = row?;
        let failures: Option<Vec<u64>> = failures
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect();
        let (Ok(peer), Some(failures)) = (NodeId::new(&peer), failures) else {
            skipped += 1;
            continue;
        };
        let state = ScoreState {
            rtt_us: u64::try_from(rtt_us).unwrap_or(0),
            loss_ppm: u32::try_from(loss_ppm).unwrap_or(0).min(1_000_000),
            trust_penalty: if penalty.is_finite() { penalty } else { 0.0 },
            failures_secs_ago: failures,
            cost: u32::try_from(cost).unwrap_or(0),
            taken_secs_ago: now.saturating_sub(u64::try_from(at).unwrap_or(now)),
        };
        out.push((peer, state));
    }
    Ok((out, skipped))
}
