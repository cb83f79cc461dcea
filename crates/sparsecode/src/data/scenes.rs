//! Rendered scenes with known, sparse factors (dSprites-like, several objects per image): the
//! image version of the identifiability chain's planted data.
//!
//! An object *kind* is a shape (square, ellipse, triangle) in a colour (one of the RGB
//! primaries, or a mix); a scene holds `K` of the `F = shapes x colours` kinds, each at most
//! once, each with its own position, scale and orientation. The latent vector has five entries
//! per kind,
//!
//! ```text
//! z[5f .. 5f + 5] = (present, x, y, scale, angle)   for kind f present, else all 0
//! ```
//!
//! with `x, y` the centre in `[-1, 1]` (image coordinates scaled), `scale` the half-size in
//! `[smin, smax]` of the image's half-width and `angle` in `[0, 1)` (of the shape's symmetry
//! period: a quarter turn for squares, a half turn for ellipses, a third for triangles), so `z`
//! is `5 K`-sparse of `5 F`. Objects are drawn in kind order (later kinds occlude earlier ones)
//! on black, each pixel the mean of a 3 x 3 grid of samples (anti-aliasing), as `[3, S, S]`
//! channel-major values in `[0, 1]`. The label is the kind of the largest object present.

use super::clusters::ClusterSamples;
use crate::{Error, Matrix, Result};
use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::f32::consts::PI;

/// The shapes, in kind order.
pub const SHAPES: [&str; 3] = ["square", "ellipse", "triangle"];
/// The colours (RGB), in kind order.
pub const COLOURS: [[f32; 3]; 4] = [
    [1.0, 0.2, 0.2],
    [0.2, 1.0, 0.2],
    [0.3, 0.3, 1.0],
    [1.0, 1.0, 0.3],
];
/// Factors per kind: presence, x, y, scale, angle.
pub const FACTORS: usize = 5;
const SUPERSAMPLE: usize = 3;

/// Parameters of the scenes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneConfig {
    /// Image side in pixels.
    pub size: usize,
    /// Objects per scene (distinct kinds).
    pub objects: usize,
    /// Smallest and largest half-size, as fractions of the image's half-width.
    pub scale: (f32, f32),
}

impl Default for SceneConfig {
    /// 32 x 32 pixels, 3 objects, half-sizes 0.15 to 0.35 of the half-width.
    fn default() -> Self {
        SceneConfig {
            size: 32,
            objects: 3,
            scale: (0.15, 0.35),
        }
    }
}

impl SceneConfig {
    /// Kinds `F` (shapes x colours).
    pub fn kinds(&self) -> usize {
        SHAPES.len() * COLOURS.len()
    }

    /// Refuses what cannot be drawn, naming the field.
    pub fn check(&self) -> Result<()> {
        if !(8..=512).contains(&self.size) {
            return Err(Error::param(
                "size",
                format!("{} pixels: use 8 to 512", self.size),
            ));
        }
        if self.objects == 0 || self.objects > self.kinds() {
            return Err(Error::param(
                "objects",
                format!(
                    "{} per scene: use 1 to {} (the kinds)",
                    self.objects,
                    self.kinds()
                ),
            ));
        }
        let (lo, hi) = self.scale;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi && hi <= 1.0) {
            return Err(Error::param(
                "scale",
                format!("({lo}, {hi}): need 0 < smallest <= largest <= 1"),
            ));
        }
        Ok(())
    }
}

/// Whether the point `(u, v)` (in the object's own frame, unit half-size) is inside `shape`.
fn inside(shape: usize, u: f32, v: f32) -> bool {
    match shape {
        0 => u.abs() <= 1.0 && v.abs() <= 1.0,
        1 => u * u + (v / 0.6) * (v / 0.6) <= 1.0,
        _ => {
            // An equilateral triangle with its centroid at the origin, circumradius 1.
            let s3 = 3f32.sqrt();
            v >= -0.5 && s3 * u - v >= -1.0 && -s3 * u - v >= -1.0
        }
    }
}

/// The symmetry period of `shape` in radians (its angle factor is the fraction of it).
fn period(shape: usize) -> f32 {
    match shape {
        0 => PI / 2.0,
        1 => PI,
        _ => 2.0 * PI / 3.0,
    }
}

/// Draws one scene from its latent row `z` into `img` (`[3, S, S]`, zeroed by the caller).
pub fn render(cfg: &SceneConfig, z: &[f32], img: &mut [f32]) {
    let s = cfg.size;
    let plane = s * s;
    for f in 0..cfg.kinds() {
        let k = &z[f * FACTORS..(f + 1) * FACTORS];
        if k[0] == 0.0 {
            continue;
        }
        let (shape, colour) = (f / COLOURS.len(), COLOURS[f % COLOURS.len()]);
        let (cx, cy, half) = (k[1], k[2], k[3]);
        let theta = k[4] * period(shape);
        let (c, sn) = (theta.cos(), theta.sin());
        for py in 0..s {
            for px in 0..s {
                let mut hits = 0;
                for sy in 0..SUPERSAMPLE {
                    for sx in 0..SUPERSAMPLE {
                        // Pixel sample in [-1, 1] image coordinates.
                        let x = (px as f32 + (sx as f32 + 0.5) / SUPERSAMPLE as f32) / s as f32
                            * 2.0
                            - 1.0;
                        let y = (py as f32 + (sy as f32 + 0.5) / SUPERSAMPLE as f32) / s as f32
                            * 2.0
                            - 1.0;
                        let (dx, dy) = ((x - cx) / half, (y - cy) / half);
                        if inside(shape, dx * c + dy * sn, -dx * sn + dy * c) {
                            hits += 1;
                        }
                    }
                }
                if hits > 0 {
                    let a = hits as f32 / (SUPERSAMPLE * SUPERSAMPLE) as f32;
                    for ch in 0..3 {
                        let p = &mut img[ch * plane + py * s + px];
                        *p = (1.0 - a) * *p + a * colour[ch];
                    }
                }
            }
        }
    }
}

/// `n` scenes: latents `[n, 5 F]`, labels (the kind of the largest object), images `[n, 3 S S]`.
pub fn draw<R: Rng>(cfg: &SceneConfig, n: usize, rng: &mut R) -> Result<ClusterSamples> {
    cfg.check()?;
    let (kinds, pixels) = (cfg.kinds(), 3 * cfg.size * cfg.size);
    crate::memory::admit_array("scene images", &[n, pixels], 4)?;
    let mut z = Matrix::zeros(n, kinds * FACTORS);
    let mut x = Matrix::zeros(n, pixels);
    let mut labels = Vec::with_capacity(n);
    let (lo, hi) = cfg.scale;
    for r in 0..n {
        let row = z.row_mut(r);
        let mut present = sample(rng, kinds, cfg.objects).into_vec();
        present.sort_unstable();
        let mut largest = (f32::NEG_INFINITY, 0);
        for f in present {
            let half = rng.random_range(lo..=hi);
            // Centres keep most of the object inside the frame.
            let reach = 1.0 - half;
            row[f * FACTORS..(f + 1) * FACTORS].copy_from_slice(&[
                1.0,
                rng.random_range(-reach..=reach),
                rng.random_range(-reach..=reach),
                half,
                rng.random::<f32>(),
            ]);
            if half > largest.0 {
                largest = (half, f);
            }
        }
        labels.push(largest.1);
        render(cfg, z.row(r), x.row_mut(r));
    }
    Ok(ClusterSamples { z, labels, x })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn one(kind: usize, cx: f32, cy: f32, half: f32, angle: f32) -> Vec<f32> {
        let mut z = vec![0.0; SceneConfig::default().kinds() * FACTORS];
        z[kind * FACTORS..(kind + 1) * FACTORS].copy_from_slice(&[1.0, cx, cy, half, angle]);
        z
    }

    fn area(img: &[f32], s: usize) -> f32 {
        // Coverage summed over the pixels (each pixel's largest channel is the colour's 1.0).
        (0..s * s)
            .map(|p| (0..3).map(|c| img[c * s * s + p]).fold(0.0f32, f32::max))
            .sum()
    }

    #[test]
    fn shapes_cover_the_area_their_geometry_says() {
        let cfg = SceneConfig::default();
        let s = cfg.size;
        let half = 0.5; // 8 pixels of the 16-pixel half-width
        let px = half * s as f32 / 2.0;
        let want = [
            4.0 * px * px,                     // square, side 2 half
            PI * px * (0.6 * px),              // ellipse, axes half and 0.6 half
            3.0 * 3f32.sqrt() / 4.0 * px * px, // triangle, circumradius half
        ];
        for (shape, w) in want.iter().enumerate() {
            let mut img = vec![0.0; 3 * s * s];
            // Colour 0 is red (1.0 in channel 0): coverage reads straight off channel 0.
            render(
                &cfg,
                &one(shape * COLOURS.len(), 0.0, 0.0, half, 0.1),
                &mut img,
            );
            let got = area(&img, s);
            assert!(
                (got - w).abs() / w < 0.05,
                "{}: {got} vs {w}",
                SHAPES[shape]
            );
        }
    }

    #[test]
    fn a_later_kind_occludes_an_earlier_one_and_position_moves_the_object() {
        let cfg = SceneConfig::default();
        let s = cfg.size;
        let mut z = one(0, 0.0, 0.0, 0.4, 0.0); // red square
        let green = one(1, 0.0, 0.0, 0.2, 0.0); // smaller green square on top
        z.iter_mut().zip(&green).for_each(|(a, b)| *a += b);
        let mut img = vec![0.0; 3 * s * s];
        render(&cfg, &z, &mut img);
        let centre = (s / 2) * s + s / 2;
        assert!(
            img[centre] < 0.3 && img[s * s + centre] > 0.99,
            "green in front"
        );
        let mut left = vec![0.0; 3 * s * s];
        render(&cfg, &one(0, -0.5, 0.0, 0.2, 0.0), &mut left);
        let cols: Vec<usize> = (0..s * s)
            .filter(|p| left[*p] > 0.5)
            .map(|p| p % s)
            .collect();
        assert!(cols.iter().all(|c| *c < s / 2), "left of centre");
    }

    #[test]
    fn draws_sparse_factors_labels_and_images_deterministically() {
        let cfg = SceneConfig::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let d = draw(&cfg, 50, &mut rng).unwrap();
        assert_eq!(d.z.shape(), (50, 12 * FACTORS));
        assert_eq!(d.x.shape(), (50, 3 * 32 * 32));
        for r in 0..50 {
            let z = d.z.row(r);
            let present: Vec<usize> = (0..12).filter(|f| z[f * FACTORS] == 1.0).collect();
            assert_eq!(present.len(), 3);
            let biggest = present
                .iter()
                .copied()
                .max_by(|a, b| z[a * FACTORS + 3].total_cmp(&z[b * FACTORS + 3]))
                .unwrap();
            assert_eq!(d.labels[r], biggest);
            assert!(d.x.row(r).iter().all(|v| (0.0..=1.0).contains(v)));
        }
        let again = draw(&cfg, 50, &mut rand_chacha::ChaCha8Rng::seed_from_u64(5)).unwrap();
        assert_eq!(again.x, d.x);
        let bad = SceneConfig {
            objects: 13,
            ..cfg.clone()
        };
        assert!(draw(&bad, 1, &mut rng)
            .unwrap_err()
            .to_string()
            .contains("1 to 12"));
        let bad = SceneConfig {
            scale: (0.5, 0.2),
            ..cfg
        };
        assert!(bad.check().is_err());
    }
}
