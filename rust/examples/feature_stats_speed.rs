//! FeatureStats over n x d f32 features against the bare Gram kernel, in
//! alternating rounds: `cargo run --release --example feature_stats_speed`.
use std::time::Instant;
fn main() {
    let (n, d, batch) = (10_000usize, 2048usize, 2500usize);
    let mut state = 1u64;
    let x: Vec<f32> = (0..n * d)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 0.5
        })
        .collect();
    let mean = vec![0.5f64; d];
    let tiles = _core::gram::Tiles::new(d);
    let mut c = vec![0.0f64; tiles.len()];
    let (mut tf, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let mut fs = _core::stats::FeatureStats::new(d).unwrap();
        for b in x.chunks(batch * d) {
            fs.update(b).unwrap();
        }
        std::hint::black_box(fs.covariance().unwrap());
        tf.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let scratch = &mut _core::gram::Scratch::default();
        _core::gram::syrk_centred(&x, d, &mean, None, &mut c, &tiles, scratch, true, Default::default());
        tg.push(t.elapsed().as_secs_f64());
    }
    println!("FeatureStats {:?}", tf.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>());
    println!("bare gram    {:?}", tg.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>());
}
