//! Our `.npy` reader and writer against an independent implementation (npyz): every file one
//! writes, the other reads to the same shape and values; what we refuse, we refuse by name.

use npyz::WriterBuilder;
use sparsecode::io::npy::{read_matrix, read_npy, write_matrix};
use sparsecode::Matrix;
use std::path::Path;

fn write_with_npyz<T: npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[u64],
    order: npyz::Order,
    values: &[T],
) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .order(order)
        .writer(file)
        .begin_nd()
        .unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 - 7.5) * 0.37).collect()
}

#[test]
fn npyz_reads_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    for (rows, cols) in [(3, 5), (1, 1), (0, 4), (17, 64)] {
        let path = dir.path().join(format!("{rows}x{cols}.npy"));
        let m = Matrix::from_vec(rows, cols, values(rows * cols)).unwrap();
        write_matrix(&path, &m).unwrap();
        let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let npy = npyz::NpyFile::new(file).unwrap();
        assert_eq!(npy.shape(), &[rows as u64, cols as u64]);
        assert_eq!(npy.order(), npyz::Order::C);
        assert_eq!(npy.into_vec::<f32>().unwrap(), m.as_slice());
    }
}

#[test]
fn we_read_what_npyz_writes_in_every_float_width() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(24);
    let path = dir.path().join("x.npy");
    write_with_npyz(&path, &[4, 6], npyz::Order::C, &v);
    assert_eq!(read_matrix(&path).unwrap().as_slice(), &v[..]);
    let wide: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
    write_with_npyz(&path, &[2, 3, 4], npyz::Order::C, &wide);
    assert_eq!(read_npy(&path).unwrap(), (vec![2, 3, 4], v.clone()));
    let narrow: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
    write_with_npyz(&path, &[24], npyz::Order::C, &narrow);
    let want: Vec<f32> = narrow.iter().map(|x| x.to_f32()).collect();
    assert_eq!(read_npy(&path).unwrap(), (vec![24], want));
}

#[test]
fn what_we_cannot_read_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.npy");
    write_with_npyz(&path, &[4, 6], npyz::Order::Fortran, &values(24));
    let e = read_matrix(&path).unwrap_err().to_string();
    assert!(e.contains("f.npy") && e.contains("ortran"), "{e}");
    write_with_npyz(
        &path,
        &[4, 6],
        npyz::Order::C,
        &(0..24).collect::<Vec<i32>>(),
    );
    let e = read_matrix(&path).unwrap_err().to_string();
    assert!(e.contains("f.npy") && e.contains("<i4"), "{e}");
}
