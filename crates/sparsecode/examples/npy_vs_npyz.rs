//! Should `.npy` go through `npyz`? Times reading one f32 matrix with npyz (into a Vec) and with
//! our memory-mapped reader, and shows what each says about malformed files.
//!
//!     cargo run --release -p sparsecode --example npy_vs_npyz -- [ROWS] [COLS] [REPEATS]

use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn npyz_read(path: &Path) -> std::io::Result<Vec<f32>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    npyz::NpyFile::new(file)?.into_vec::<f32>()
}

fn time(repeats: usize, mut f: impl FnMut() -> usize) -> f64 {
    let times = (0..repeats).map(|_| {
        let t = Instant::now();
        std::hint::black_box(f());
        t.elapsed().as_secs_f64()
    });
    median(times.collect())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let (rows, cols, repeats) = (
        *args.first().unwrap_or(&200_000),
        *args.get(1).unwrap_or(&256),
        *args.get(2).unwrap_or(&7),
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("x.npy");
    let m = sparsecode::Matrix::from_fn(rows, cols, |i, j| (i * 31 + j) as f32 * 1e-3);
    sparsecode::io::npy::write_matrix(&path, &m)?;
    let mb = (rows * cols * 4) as f64 / 1e6;
    let ours = time(repeats, || {
        sparsecode::io::npy::read_matrix(&path).map_or(0, |m| m.rows())
    });
    let theirs = time(repeats, || npyz_read(&path).map_or(0, |v| v.len()));
    assert_eq!(
        npyz_read(&path)?,
        m.as_slice(),
        "npyz reads our file differently"
    );
    println!("{rows} x {cols} f32 ({mb:.0} MB), median of {repeats} reads:");
    println!("  ours (mmap, checked, finite check) {:.1} ms", ours * 1e3);
    println!(
        "  npyz (BufReader into Vec)          {:.1} ms",
        theirs * 1e3
    );
    println!("  ratio npyz / ours                  {:.2}", theirs / ours);

    println!("\nmalformed files:");
    let header = |shape: &str, extra: usize| {
        let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let mut h = b"\x93NUMPY\x01\x00".to_vec();
        let pad = 64 - (10 + dict.len() + 1) % 64;
        let len = (dict.len() + pad + 1) as u16;
        h.extend(len.to_le_bytes());
        h.extend(dict.as_bytes());
        h.extend(std::iter::repeat_n(b' ', pad));
        h.push(b'\n');
        h.extend(std::iter::repeat_n(0u8, extra));
        h
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated data", header("(4, 4)", 40)),
        ("trailing data", header("(2, 2)", 20)),
        (
            "shape whose byte count wraps",
            header("(144115188075855972, 32)", 64),
        ),
        ("not npy", b"hello world, not an array".to_vec()),
    ];
    for (name, bytes) in cases {
        let p = dir.path().join("bad.npy");
        std::fs::File::create(&p)?.write_all(&bytes)?;
        let ours = sparsecode::io::npy::read_matrix(&p)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let theirs =
            std::panic::catch_unwind(|| npyz_read(&p).map(|_| ()).map_err(|e| e.to_string()));
        println!(
            "  {name}:\n    ours: {ours:?}\n    npyz: {}",
            match theirs {
                Ok(r) => format!("{r:?}"),
                Err(_) => "panicked".into(),
            }
        );
    }
    Ok(())
}
