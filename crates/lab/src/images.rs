//! Photographs as data: decoding to grey levels, the whitening filter of Olshausen & Field
//! (1997), random square patches, and atoms drawn as a PNG grid a person can look at.
//!
//! Whitening flattens the roughly `1/f` amplitude spectrum of natural images and rolls off
//! before the highest frequencies, where noise and (for JPEG) the 8-pixel block grid live:
//!
//! `R(f) = f exp(-(f / f0)^4)`, `f = sqrt(fx^2 + fy^2)` in cycles per pixel,
//!
//! applied as a product in the frequency domain; `f0` is given as a fraction of the Nyquist
//! frequency (0.5 cycles per pixel). Each whitened image is scaled to unit variance.

use image::{ImageFormat, ImageReader, Limits};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use sparsecode::{Error, Matrix, Result};
use std::path::Path;

/// A grey-level image, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Gray {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height x width` values.
    pub data: Vec<f32>,
}

impl Gray {
    /// The value at column `x`, row `y`.
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }
}

/// Decodes the image file at `path` (format told by content) to grey levels in `[0, 1]`. The
/// pixels are admitted against the memory limit before decoding.
pub fn load_gray(path: &Path) -> Result<Gray> {
    let bad = |e: image::ImageError| Error::format(path, format!("not a decodable image: {e}"));
    // Reading the header consumes a reader: one for the size, one to decode.
    let (w, h) = reader(path)?.into_dimensions().map_err(bad)?;
    let (w, h) = (w as usize, h as usize);
    if w == 0 || h == 0 {
        return Err(Error::format(path, "an image of no pixels"));
    }
    // The decoder holds up to 4 channels of 4 bytes per pixel before conversion.
    sparsecode::memory::admit_array(&format!("decoding {}", path.display()), &[w, h, 4], 4)?;
    let mut decoder = reader(path)?;
    decoder.limits(Limits::no_limits());
    let img = decoder.decode().map_err(bad)?.to_luma32f();
    Ok(Gray {
        width: w,
        height: h,
        data: img.into_raw(),
    })
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>> {
    ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))
}

/// Halves both sides by averaging 2 x 2 blocks (an odd last row or column is dropped).
pub fn downsample2(img: &Gray) -> Gray {
    let (w, h) = (img.width / 2, img.height / 2);
    let mut data = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let s = img.at(2 * x, 2 * y)
                + img.at(2 * x + 1, 2 * y)
                + img.at(2 * x, 2 * y + 1)
                + img.at(2 * x + 1, 2 * y + 1);
            data.push(s / 4.0);
        }
    }
    Gray {
        width: w,
        height: h,
        data,
    }
}

/// In-place FFT of every row of a `rows x len` buffer, forward or inverse (unnormalised).
fn fft_rows(buf: &mut [Complex<f32>], len: usize, inverse: bool, planner: &mut FftPlanner<f32>) {
    let fft = if inverse {
        planner.plan_fft_inverse(len)
    } else {
        planner.plan_fft_forward(len)
    };
    fft.process(buf);
}

fn transpose(buf: &[Complex<f32>], rows: usize, cols: usize) -> Vec<Complex<f32>> {
    let mut out = vec![Complex::default(); buf.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = buf[r * cols + c];
        }
    }
    out
}

/// Signed frequency of bin `k` of an `n`-point transform, in cycles per sample.
fn freq(k: usize, n: usize) -> f32 {
    let k = if k <= n / 2 {
        k as f32
    } else {
        k as f32 - n as f32
    };
    k / n as f32
}

/// The whitened image: mean removed, filtered by `R(f) = f exp(-(f/f0)^4)` with
/// `f0 = f0_nyquist * 0.5` cycles per pixel, scaled to unit variance.
pub fn whiten(img: &Gray, f0_nyquist: f32) -> Result<Gray> {
    if !(f0_nyquist.is_finite() && f0_nyquist > 0.0) {
        return Err(Error::param(
            "f0",
            format!("{f0_nyquist} must be a positive fraction of the Nyquist frequency"),
        ));
    }
    let (w, h) = (img.width, img.height);
    let mean = img.data.iter().map(|v| *v as f64).sum::<f64>() / img.data.len().max(1) as f64;
    let mut buf: Vec<Complex<f32>> = img
        .data
        .iter()
        .map(|v| Complex::new(v - mean as f32, 0.0))
        .collect();
    let mut planner = FftPlanner::new();
    fft_rows(&mut buf, w, false, &mut planner);
    let mut cols = transpose(&buf, h, w); // w rows of length h
    fft_rows(&mut cols, h, false, &mut planner);
    let f0 = 0.5 * f0_nyquist;
    for kx in 0..w {
        let fx = freq(kx, w);
        for ky in 0..h {
            let fy = freq(ky, h);
            let f = (fx * fx + fy * fy).sqrt();
            cols[kx * h + ky] *= f * (-(f / f0).powi(4)).exp();
        }
    }
    fft_rows(&mut cols, h, true, &mut planner);
    let mut rows = transpose(&cols, w, h);
    fft_rows(&mut rows, w, true, &mut planner);
    let mut data: Vec<f32> = rows.iter().map(|c| c.re).collect();
    let var = data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / data.len().max(1) as f64;
    let scale = if var > 0.0 { 1.0 / var.sqrt() } else { 1.0 };
    data.iter_mut()
        .for_each(|v| *v = (*v as f64 * scale) as f32);
    Ok(Gray {
        width: w,
        height: h,
        data,
    })
}

/// `count` square patches of side `size` at uniform random positions (an image chosen in
/// proportion to the positions it offers), as rows of a `[count, size * size]` matrix.
pub fn sample_patches(images: &[Gray], size: usize, count: usize, seed: u64) -> Result<Matrix> {
    if size == 0 {
        return Err(Error::param(
            "patch",
            "the patch side must be at least 1 pixel",
        ));
    }
    if images.is_empty() {
        return Err(Error::param("images", "no image to take patches from"));
    }
    let positions: Vec<usize> = images
        .iter()
        .map(|g| (g.width + 1).saturating_sub(size) * (g.height + 1).saturating_sub(size))
        .collect();
    if let Some(small) = images.iter().find(|g| g.width < size || g.height < size) {
        return Err(Error::param(
            "patch",
            format!(
                "{size} x {size} patches do not fit in an image of {} x {} pixels",
                small.width, small.height
            ),
        ));
    }
    let total: usize = positions.iter().sum();
    sparsecode::memory::admit_array("patches", &[count, size, size], 4)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Matrix::zeros(count, size * size);
    for r in 0..count {
        let mut pick = rng.random_range(0..total);
        let i = positions
            .iter()
            .position(|&p| {
                if pick < p {
                    true
                } else {
                    pick -= p;
                    false
                }
            })
            .expect("pick < total");
        let g = &images[i];
        let span = g.width + 1 - size;
        let (x0, y0) = (pick % span, pick / span);
        let row = out.row_mut(r);
        for dy in 0..size {
            let src = (y0 + dy) * g.width + x0;
            row[dy * size..(dy + 1) * size].copy_from_slice(&g.data[src..src + size]);
        }
    }
    Ok(out)
}

/// The atoms (rows of `[n, size * size]`) as a PNG grid: each atom scaled by its own largest
/// |value| so that mid-grey is 0, drawn `zoom` pixels per value, one grey pixel between tiles.
pub fn atoms_png(atoms: &Matrix, size: usize, zoom: usize) -> Result<Vec<u8>> {
    let n = atoms.rows();
    if size * size != atoms.cols() || n == 0 || zoom == 0 {
        return Err(Error::shape(
            "atoms",
            format!("rows of {size} x {size} values"),
            format!("{:?}", atoms.shape()),
        ));
    }
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let tile = size * zoom + 1;
    let (w, h) = (cols * tile + 1, rows * tile + 1);
    let mut px = vec![96u8; w * h];
    for (j, atom) in atoms.as_slice().chunks(size * size).enumerate() {
        let peak = atom.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        let (ox, oy) = ((j % cols) * tile + 1, (j / cols) * tile + 1);
        for y in 0..size * zoom {
            for x in 0..size * zoom {
                let v = atom[(y / zoom) * size + x / zoom] / peak;
                px[(oy + y) * w + ox + x] = (127.5 + 127.5 * v).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    let img = image::GrayImage::from_raw(w as u32, h as u32, px)
        .ok_or_else(|| Error::param("atoms", "grid too large to draw"))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| Error::param("atoms", format!("cannot encode the PNG: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripes(w: usize, h: usize, period: f32) -> Gray {
        let data = (0..h)
            .flat_map(|_| {
                (0..w).map(move |x| (2.0 * std::f32::consts::PI * x as f32 / period).sin())
            })
            .collect();
        Gray {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn whitening_keeps_a_mid_frequency_and_removes_the_mean_and_high_ones() {
        // A sinusoid of period 8 (0.125 c/px) passes; one of period 2.2 (near Nyquist) is cut.
        let mid = whiten(&stripes(64, 48, 8.0), 0.8).unwrap();
        let corr: f32 = mid
            .data
            .iter()
            .zip(&stripes(64, 48, 8.0).data)
            .map(|(a, b)| a * b)
            .sum::<f32>()
            / mid.data.len() as f32;
        assert!(corr > 0.6, "{corr}"); // unit variance against amplitude-1 sine: 1/sqrt(2)
        let mut mixed = stripes(64, 48, 8.0);
        let high = stripes(64, 48, 2.2);
        mixed
            .data
            .iter_mut()
            .zip(&high.data)
            .for_each(|(a, b)| *a += b + 3.0);
        let w = whiten(&mixed, 0.4).unwrap();
        let on_high: f32 = w
            .data
            .iter()
            .zip(&high.data)
            .map(|(a, b)| a * b)
            .sum::<f32>()
            / w.data.len() as f32;
        assert!(on_high.abs() < 0.05, "{on_high}");
        assert!(w.data.iter().sum::<f32>().abs() / (w.data.len() as f32) < 1e-4);
        assert!(whiten(&mixed, 0.0).is_err());
    }

    #[test]
    fn patches_come_from_inside_the_images_and_refuse_oversize() {
        let g = Gray {
            width: 5,
            height: 4,
            data: (0..20).map(|v| v as f32).collect(),
        };
        let p = sample_patches(std::slice::from_ref(&g), 2, 50, 1).unwrap();
        for r in 0..50 {
            let row = p.row(r);
            // A 2x2 patch of a row-major ramp: [a, a+1, a+5, a+6] with a at a valid corner.
            let a = row[0] as usize;
            assert_eq!(
                row,
                &[a as f32, a as f32 + 1.0, a as f32 + 5.0, a as f32 + 6.0]
            );
            assert!(a % 5 <= 3 && a / 5 <= 2, "{a}");
        }
        let again = sample_patches(std::slice::from_ref(&g), 2, 50, 1).unwrap();
        assert_eq!(p, again);
        let e = sample_patches(std::slice::from_ref(&g), 6, 1, 1).unwrap_err();
        assert!(
            e.to_string().contains("do not fit in an image of 5 x 4"),
            "{e}"
        );
    }

    #[test]
    fn atoms_png_round_trips_through_a_decoder_and_a_bad_file_is_a_format_error() {
        let atoms = Matrix::from_vec(
            3,
            4,
            vec![1., -1., 0., 0.5, 0., 0., 0., 2., -3., 3., 0., 0.],
        )
        .unwrap();
        let bytes = atoms_png(&atoms, 2, 3).unwrap();
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("atoms.png");
        std::fs::write(&path, &bytes).unwrap();
        let g = load_gray(&path).unwrap();
        // 2 columns x 2 rows of 7-pixel tiles plus the outer border.
        assert_eq!((g.width, g.height), (15, 15));
        assert!((g.at(1, 1) - 1.0).abs() < 1e-6); // atom 0's +1 is white
        assert!(g.at(4, 1) < 1e-6); // its -1 is black
        std::fs::write(t.path().join("bad.jpg"), b"\xff\xd8\xff not really").unwrap();
        let e = load_gray(&t.path().join("bad.jpg")).unwrap_err();
        assert!(e.to_string().contains("not a decodable image"), "{e}");
        let e = load_gray(&t.path().join("missing.jpg")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }
}
