//! Shuffled, sharded mini-batch streaming over an in-memory image set.
//!
//! Order of an epoch: the item indices `0..n` are shuffled by a ChaCha8
//! generator seeded with `seed` on stream `epoch`, so the order is a pure
//! function of `(seed, epoch)`. Sharding is strided: rank `r` of `w` takes
//! positions `r, r + w, r + 2w, ...` of the shuffled order. With that rule,
//! batch `t` of every rank together holds exactly positions
//! `t*w*B .. (t+1)*w*B` of the epoch, i.e. the same images one process
//! would see in its batch `t` with the global batch `w*B`.
//!
//! With `drop_last`, every rank gets `n / w` items (the last `n % w`
//! positions are dropped so ranks stay in step) and only whole batches.
//! Without it, ranks take every position (sizes may differ by one) and the
//! last batch may be short.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Configuration errors, reported before any work starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError(pub String);

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamError {}

/// Most batches the background thread may gather ahead. The channel
/// allocates its slots up front, so an unbounded value (say 10^9) would be
/// an allocation failure, i.e. a process abort, instead of an error.
pub const MAX_PREFETCH: usize = 1024;

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    pub drop_last: bool,
    pub rank: usize,
    pub world_size: usize,
    pub prefetch: usize,
}

impl StreamConfig {
    pub fn validate(&self) -> Result<(), StreamError> {
        if self.batch_size == 0 {
            return Err(StreamError("batch_size must be at least 1".into()));
        }
        if self.world_size == 0 {
            return Err(StreamError("world_size must be at least 1".into()));
        }
        if self.rank >= self.world_size {
            return Err(StreamError(format!(
                "rank {} is out of range for world_size {}",
                self.rank, self.world_size
            )));
        }
        if self.prefetch == 0 || self.prefetch > MAX_PREFETCH {
            return Err(StreamError(format!(
                "prefetch must be between 1 and {MAX_PREFETCH}, got {}",
                self.prefetch
            )));
        }
        Ok(())
    }
}

/// The images (flat, `n * item_size` bytes) and optional labels.
#[derive(Debug)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Option<Vec<i64>>,
    n: usize,
    item_size: usize,
}

impl Dataset {
    pub fn new(images: Vec<u8>, n: usize, labels: Option<Vec<i64>>) -> Result<Self, StreamError> {
        if n == 0 {
            if !images.is_empty() {
                return Err(StreamError("0 items but non-empty image data".into()));
            }
        } else if images.len() % n != 0 {
            return Err(StreamError(format!(
                "{} image bytes do not split into {n} equal items",
                images.len()
            )));
        }
        if u32::try_from(n).is_err() {
            return Err(StreamError(format!(
                "{n} items: at most {} are supported (indices are u32)",
                u32::MAX
            )));
        }
        if let Some(l) = &labels {
            if l.len() != n {
                return Err(StreamError(format!(
                    "label/image count mismatch: {} labels for {n} images",
                    l.len()
                )));
            }
        }
        let item_size = if n == 0 { 0 } else { images.len() / n };
        Ok(Dataset { images, labels, n, item_size })
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn item_size(&self) -> usize {
        self.item_size
    }
}

/// Positions of the epoch, in order, that belong to this rank.
pub fn epoch_indices(n: usize, cfg: &StreamConfig, epoch: u64) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    if cfg.shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(epoch);
        perm.shuffle(&mut rng);
    }
    let w = cfg.world_size;
    let usable = if cfg.drop_last { (n / w) * w } else { n };
    let mut mine: Vec<u32> = perm[..usable].iter().skip(cfg.rank).step_by(w).copied().collect();
    if cfg.drop_last {
        let whole = (mine.len() / cfg.batch_size) * cfg.batch_size;
        mine.truncate(whole);
    }
    mine
}

/// Number of batches one rank gets per epoch.
pub fn batches_per_epoch(n: usize, cfg: &StreamConfig) -> usize {
    let w = cfg.world_size;
    let mine = if cfg.drop_last {
        n / w
    } else {
        // positions r, r+w, ... below n
        n / w + usize::from(cfg.rank < n % w)
    };
    if cfg.drop_last {
        mine / cfg.batch_size
    } else {
        mine.div_ceil(cfg.batch_size)
    }
}

/// One gathered batch: `len * item_size` image bytes and `len` labels
/// (-1 where the dataset has none).
#[derive(Debug)]
pub struct Batch {
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
    pub len: usize,
}

pub fn gather(ds: &Dataset, idx: &[u32]) -> Batch {
    let s = ds.item_size;
    let mut images = Vec::with_capacity(idx.len() * s);
    for &i in idx {
        let o = i as usize * s;
        images.extend_from_slice(&ds.images[o..o + s]);
    }
    let labels = match &ds.labels {
        Some(l) => idx.iter().map(|&i| l[i as usize]).collect(),
        None => vec![-1; idx.len()],
    };
    Batch { images, labels, len: idx.len() }
}

/// Iterator over one epoch's batches, gathered by a background thread
/// that stays at most `prefetch` batches ahead. Dropping it stops the
/// thread (its next send fails).
pub struct EpochIter {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
}

impl EpochIter {
    pub fn start(ds: Arc<Dataset>, cfg: &StreamConfig, epoch: u64, start_batch: usize) -> Self {
        let idx = epoch_indices(ds.len(), cfg, epoch);
        let bs = cfg.batch_size;
        let (tx, rx) = sync_channel::<Batch>(cfg.prefetch);
        let worker = std::thread::Builder::new()
            .name("psgan-batch-stream".into())
            .spawn(move || {
                for chunk in idx.chunks(bs).skip(start_batch) {
                    if tx.send(gather(&ds, chunk)).is_err() {
                        return;
                    }
                }
            })
            .ok();
        EpochIter { rx: Some(rx), worker }
    }

    /// Next batch, blocking until the worker has it; None at epoch end.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let got = self.rx.as_ref().and_then(|rx| rx.recv().ok());
        if got.is_none() {
            self.finish();
        }
        got
    }

    fn finish(&mut self) {
        self.rx = None;
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}

impl Iterator for EpochIter {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.next_batch()
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn cfg(bs: usize, drop_last: bool, rank: usize, ws: usize) -> StreamConfig {
        StreamConfig { batch_size: bs, shuffle: true, seed: 7, drop_last, rank, world_size: ws, prefetch: 2 }
    }

    #[test]
    fn every_item_once_without_drop_last() {
        let c = cfg(8, false, 0, 1);
        let idx = epoch_indices(101, &c, 3);
        let set: HashSet<u32> = idx.iter().copied().collect();
        assert_eq!(idx.len(), 101);
        assert_eq!(set.len(), 101);
        assert_eq!(batches_per_epoch(101, &c), 13);
    }

    #[test]
    fn order_is_a_function_of_seed_and_epoch() {
        let c = cfg(8, true, 0, 1);
        assert_eq!(epoch_indices(500, &c, 1), epoch_indices(500, &c, 1));
        assert_ne!(epoch_indices(500, &c, 1), epoch_indices(500, &c, 2));
        let mut c2 = c.clone();
        c2.seed = 8;
        assert_ne!(epoch_indices(500, &c, 1), epoch_indices(500, &c2, 1));
    }

    #[test]
    fn rank_shards_are_disjoint_and_cover() {
        for &(n, ws) in &[(103usize, 3usize), (64, 4), (10, 3)] {
            let mut all = Vec::new();
            for r in 0..ws {
                let c = cfg(4, false, r, ws);
                let idx = epoch_indices(n, &c, 0);
                assert_eq!(idx.chunks(4).count(), batches_per_epoch(n, &c));
                all.extend(idx);
            }
            all.sort_unstable();
            assert_eq!(all, (0..n as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn sharded_batches_equal_global_batches() {
        let (n, ws, b) = (1000usize, 4usize, 8usize);
        let global = epoch_indices(n, &cfg(ws * b, true, 0, 1), 5);
        let shards: Vec<Vec<u32>> = (0..ws).map(|r| epoch_indices(n, &cfg(b, true, r, ws), 5)).collect();
        let nb = batches_per_epoch(n, &cfg(b, true, 0, ws));
        assert_eq!(nb, batches_per_epoch(n, &cfg(ws * b, true, 0, 1)));
        for t in 0..nb {
            let mut mine: Vec<u32> = shards.iter().flat_map(|s| s[t * b..(t + 1) * b].iter().copied()).collect();
            let mut want = global[t * ws * b..(t + 1) * ws * b].to_vec();
            mine.sort_unstable();
            want.sort_unstable();
            assert_eq!(mine, want);
        }
    }

    #[test]
    fn iterator_gathers_items_and_labels() {
        let n = 50;
        let images: Vec<u8> = (0..n).flat_map(|i| vec![i as u8; 4]).collect();
        let labels: Vec<i64> = (0..n as i64).collect();
        let ds = Arc::new(Dataset::new(images, n, Some(labels)).unwrap());
        let c = cfg(8, true, 0, 1);
        let mut seen = 0;
        for b in EpochIter::start(ds.clone(), &c, 0, 0) {
            assert_eq!(b.len, 8);
            for (k, &l) in b.labels.iter().enumerate() {
                assert!(b.images[k * 4..k * 4 + 4].iter().all(|&p| p as i64 == l));
            }
            seen += 1;
        }
        assert_eq!(seen, 6);
        // Starting mid-epoch skips exactly the first batches.
        let full: Vec<Vec<i64>> = EpochIter::start(ds.clone(), &c, 2, 0).map(|b| b.labels).collect();
        let tail: Vec<Vec<i64>> = EpochIter::start(ds.clone(), &c, 2, 4).map(|b| b.labels).collect();
        assert_eq!(&full[4..], &tail[..]);
        // Dropping an unfinished iterator stops its worker.
        let mut it = EpochIter::start(ds, &c, 0, 0);
        assert!(it.next().is_some());
        drop(it);
    }

    #[test]
    fn bad_configs_and_mismatches_are_errors() {
        assert!(cfg(0, true, 0, 1).validate().is_err());
        assert!(cfg(4, true, 2, 2).validate().is_err());
        assert!(Dataset::new(vec![0; 12], 3, Some(vec![0; 2])).unwrap_err().0.contains("mismatch"));
        assert!(Dataset::new(vec![0; 13], 3, None).is_err());
    }

    #[test]
    fn prefetch_is_bounded_before_any_channel_is_made() {
        for (prefetch, ok) in [(0, false), (1, true), (MAX_PREFETCH, true), (MAX_PREFETCH + 1, false), (1_000_000_000, false)] {
            let c = StreamConfig { prefetch, ..cfg(4, true, 0, 1) };
            assert_eq!(c.validate().is_ok(), ok, "prefetch {prefetch}");
        }
    }
}
