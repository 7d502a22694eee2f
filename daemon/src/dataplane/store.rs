//! `connect` listeners kept across restarts: table `connects` in `node.db`.

use std::net::SocketAddr;
use std::path::Path;

use rusqlite::params;
use trellis_routing::ServiceName;

fn open(db: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = crate::util::files::open_sqlite(db)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS connects(
           listen TEXT PRIMARY KEY, service TEXT NOT NULL, created_at INTEGER NOT NULL);",
    )?;
    Ok(conn)
}

/// Every stored listener; rows that no longer parse are skipped with a warning.
pub(super) fn load(db: &Path) -> rusqlite::Result<Vec<(ServiceName, SocketAddr)>> {
    let conn = open(db)?;
    let mut stmt = conn.prepare("SELECT listen, service FROM connects ORDER BY listen")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (listen, service) in rows {
        match (listen.parse(), ServiceName::new(&service)) {
            (Ok(addr), Ok(name)) => out.push((name, addr)),
            _ => tracing::warn!(
                listen,
                service,
                "a stored connect listener does not parse; skipped"
            ),
        }
    }
    Ok(out)
}

/// Keeps a listener.
pub(super) fn insert(db: &Path, service: &ServiceName, listen: SocketAddr) -> rusqlite::Result<()> {
    open(db)?.execute(
        "INSERT INTO connects(listen, service, created_at) VALUES(?1, ?2, ?3)
         ON CONFLICT(listen) DO UPDATE SET service=excluded.service",
        params![
            listen.to_string(),
            service.as_str(),
            i64::try_from(crate::util::time::now_secs()).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(())
}

/// Forgets listeners.
pub(super) fn delete(db: &Path, listens: &[SocketAddr]) -> rusqlite::Result<()> {
    let mut conn = open(db)?;
    let tx = conn.transaction()?;
    for listen in listens {
        tx.execute(
            "DELETE FROM connects WHERE listen = ?1",
            params![listen.to_string()],
        )?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_survive_a_reopen_and_go_when_deleted() {
        let dir = std::env::temp_dir().join(format!("trellis-connects-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let db = dir.join("node.db");
        let _ = std::fs::remove_file(&db);
        let web = ServiceName::new("web.acme").expect("name");
        let a: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        insert(&db, &web, a).expect("insert");
        insert(&db, &web, b).expect("insert");
        assert_eq!(
            load(&db).expect("load"),
            vec![(web.clone(), a), (web.clone(), b)]
        );
        delete(&db, &[a]).expect("delete");
        assert_eq!(load(&db).expect("load"), vec![(web, b)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
