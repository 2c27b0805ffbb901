//! The access log (アクセス記録): every answer and every refusal, who asked, for whom,
//! when, and what was disclosed — readable back per person.
//!
//! A synchronous RocksDB put per lookup would cost more than the lookup itself (WAL
//! append + memtable insert under the write mutex). Instead a lookup hands its entry to a
//! bounded queue and a dedicated writer thread group-commits batches to the `access_log`
//! column family (WAL on). The queue is bounded and `send` blocks when it is full, so an
//! entry is never dropped: a writer that falls behind slows lookups down instead of
//! losing their trail. A process kill can lose only the entries still in the queue (at
//! most a few milliseconds' worth); a clean shutdown drains it (`Store` drop).
//!
//! Key: PMH-ID (16) + time in µs (8, big-endian) + sequence (8, big-endian), so one
//! person's history is one prefix scan in time order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use rkyv::{Archive, Deserialize, Serialize};
use rocksdb::{DB, WriteBatch, WriteOptions};

use crate::layout::ACCESS_LOG;

/// What the asking institution got.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AccessOutcome {
    /// Certificates were returned (possibly none).
    Answered,
    /// Refused: no live consent.
    ConsentRequired,
}

/// One certificate named in an answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DisclosedCertificate {
    /// 自治体コード.
    pub municipality_code: u32,
    /// 公費負担者番号.
    pub insurer_number: u32,
    /// 機関別受給者証種別ID.
    pub org_specific_certificate_type_id: String,
    /// 履歴キー.
    pub history_key: String,
}

/// One access-log entry as stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// When (Unix µs).
    pub at_micros: i64,
    /// For whom (PMH-ID bytes).
    pub pmh_id: [u8; 16],
    /// Which institution asked (10-digit code).
    pub institution: u64,
    /// Through which client (the gateway's token name).
    pub client: String,
    /// The date asked about (days since 1970-01-01).
    pub date: i32,
    /// Answered or refused.
    pub outcome: AccessOutcome,
    /// Whether the personal block (基本5情報) was disclosed.
    pub personal_disclosed: bool,
    /// The certificates disclosed.
    pub disclosed: Vec<DisclosedCertificate>,
}

enum Msg {
    Entry(Box<AccessEntry>),
    Flush(Sender<()>),
}

/// The sending side of the access log, owned by the store.
pub(crate) struct AccessLogWriter {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    /// Batches that failed to write (each also logged); exposed in stats and metrics.
    pub(crate) failures: Arc<AtomicU64>,
}

impl AccessLogWriter {
    pub(crate) fn start(db: Arc<DB>, capacity: usize) -> std::io::Result<AccessLogWriter> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let failures = Arc::new(AtomicU64::new(0));
        let f = failures.clone();
        let thread = std::thread::Builder::new().name("pmh-access-log".into()).spawn(move || run(db, rx, f))?;
        Ok(AccessLogWriter { tx: Some(tx), thread: Some(thread), failures })
    }

    /// Queues an entry; blocks while the queue is full.
    #[inline]
    pub(crate) fn record(&self, entry: AccessEntry) {
        if let Some(tx) = &self.tx {
            // The writer only stops when this sender is dropped, so send cannot fail
            // while `self` is alive.
            let _ = tx.send(Msg::Entry(Box::new(entry)));
        }
    }

    /// Waits until everything queued so far is written.
    pub(crate) fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
            if tx.send(Msg::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        }
    }
}

impl Drop for AccessLogWriter {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued and exit.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const MAX_BATCH: usize = 4096;

fn run(db: Arc<DB>, rx: Receiver<Msg>, failures: Arc<AtomicU64>) {
    let mut seq: u64 = 0;
    let wo = WriteOptions::default();
    while let Ok(first) = rx.recv() {
        let mut batch = WriteBatch::default();
        let mut acks = Vec::new();
        let mut next = Some(first);
        let mut n = 0;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Entry(e) => {
                    seq += 1;
                    let mut key = [0u8; 32];
                    key[..16].copy_from_slice(&e.pmh_id);
                    key[16..24].copy_from_slice(&e.at_micros.to_be_bytes());
                    key[24..].copy_from_slice(&seq.to_be_bytes());
                    match rkyv::to_bytes::<rkyv::rancor::Error>(&*e) {
                        Ok(v) => {
                            if let Some(cf) = db.cf_handle(ACCESS_LOG) {
                                batch.put_cf(cf, key, v);
                            }
                        }
                        Err(err) => tracing::error!(%err, "access log entry did not serialize"),
                    }
                    n += 1;
                }
                Msg::Flush(ack) => acks.push(ack),
            }
            if n < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty()
            && let Err(err) = db.write_opt(batch, &wo)
        {
            failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%err, entries = n, "access log batch write failed");
        }
        for a in acks {
            let _ = a.send(());
        }
    }
}

/// Decodes a stored access-log value.
pub(crate) fn decode_entry(v: &[u8]) -> Option<AccessEntry> {
    let a = rkyv::access::<ArchivedAccessEntry, rkyv::rancor::Error>(v).ok()?;
    rkyv::deserialize::<AccessEntry, rkyv::rancor::Error>(a).ok()
}
