//! Speed of the Gram kernel (`crate::gram`) for block sizes given on the
//! command line, 2500 x 2048 f32 samples, best of 3:
//!
//!     cargo run --release --example gram_speed -- PARALLEL KC MC [KC MC ...]
//!
//! PARALLEL is 0 (one thread) or 1 (rayon's pool); `D=1024` changes the width.
//! GF/s counts n·d² flops (the lower triangle's multiply-adds, twice).
use std::time::Instant;

fn main() {
    let n = 2500usize;
    let d: usize = std::env::var("D").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("integer arguments")).collect();
    if args.len() < 3 || args.len() % 2 == 0 {
        eprintln!("usage: gram_speed PARALLEL KC MC [KC MC ...]");
        std::process::exit(2);
    }
    let x: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let mean = vec![0.5f64; d];
    let tiles = _core::gram::Tiles::new(d);
    let mut c = vec![0.0f64; tiles.len()];
    let mut scratch = _core::gram::Scratch::default();
    let par = args[0] == 1;
    for pair in args[1..].chunks(2) {
        let (kc, mc) = (pair[0], pair[1]);
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let blocking = _core::gram::Blocking { kc, mc };
            _core::gram::syrk_centred(&x, d, &mean, None, &mut c, &tiles, &mut scratch, par, blocking);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("parallel={par} kc={kc} mc={mc}: {best:.3} s, {:.1} GF/s", (n * d * d) as f64 / best / 1e9);
    }
}
