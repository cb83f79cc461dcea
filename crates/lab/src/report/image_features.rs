//! A dashboard of image features: for each feature its top images and images from its
//! activation quantiles as one PNG of tiles, and the class histogram of its top activations;
//! one HTML page (maud: every value escaped) that says, once loaded, how many tiles decoded.

use image::{GrayImage, ImageFormat};
use maud::{html, PreEscaped, DOCTYPE};
use sparsecode::{Error, Matrix, Result};

/// Tiles per row of a feature's strip.
pub const TILES: usize = 10;
/// Top activations counted in the class histogram.
pub const HISTOGRAM_TOP: usize = 50;

/// Rows of `images` (`[rows, side * side]` in `[0, 1]`) drawn as a grid, one `Vec` per line.
pub fn tiles_png(
    images: &Matrix,
    lines: &[Vec<usize>],
    side: usize,
    zoom: usize,
) -> Result<Vec<u8>> {
    if side * side != images.cols() || zoom == 0 || lines.is_empty() {
        return Err(Error::shape(
            "images",
            format!("rows of {side} x {side} pixels"),
            format!("{:?}", images.shape()),
        ));
    }
    let per_line = lines.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let tile = side * zoom + 2;
    let (w, h) = (per_line * tile, lines.len() * tile);
    let mut px = vec![255u8; w * h];
    for (li, line) in lines.iter().enumerate() {
        for (ti, &r) in line.iter().enumerate() {
            let img = images.row(r);
            for y in 0..side * zoom {
                for x in 0..side * zoom {
                    let v = img[(y / zoom) * side + x / zoom].clamp(0.0, 1.0);
                    // Dark garments on white, as the dataset is usually shown.
                    px[(li * tile + 1 + y) * w + ti * tile + 1 + x] = (255.0 * (1.0 - v)) as u8;
                }
            }
        }
    }
    let img = GrayImage::from_raw(w as u32, h as u32, px)
        .ok_or_else(|| Error::param("tiles", "grid too large to draw"))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| Error::param("tiles", format!("cannot encode the PNG: {e}")))?;
    Ok(out.into_inner())
}

/// One feature on the page.
pub struct FeaturePanel {
    /// Its index in its family.
    pub index: usize,
    /// Fraction of held-out images on which it fires.
    pub frequency: f64,
    /// File name of its strip (top images, then quantiles).
    pub png: String,
    /// `(class name, count)` among its top activations.
    pub histogram: Vec<(String, usize)>,
}

/// The rows to draw for feature `j` of `acts`: its `TILES` highest, and `TILES` at evenly spaced
/// quantiles of the rows where it fires (lowest to highest). None when it never fires.
pub fn feature_rows(acts: &Matrix, j: usize) -> Option<(Vec<usize>, Vec<usize>)> {
    let mut firing: Vec<usize> = (0..acts.rows()).filter(|r| acts.get(*r, j) > 0.0).collect();
    if firing.is_empty() {
        return None;
    }
    firing.sort_by(|a, b| acts.get(*a, j).total_cmp(&acts.get(*b, j)).then(a.cmp(b)));
    let top: Vec<usize> = firing.iter().rev().take(TILES).copied().collect();
    let n = firing.len();
    let quantiles = (1..=TILES)
        .map(|q| firing[((q * n) / TILES).saturating_sub(1).min(n - 1)])
        .collect();
    Some((top, quantiles))
}

/// The page: a section per feature with its strip and its class histogram.
pub fn page(title: &str, panels: &[FeaturePanel]) -> String {
    let script = "window.addEventListener('load', () => { \
        const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length; \
        document.getElementById('loaded').textContent = String(ok); });";
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped("body{font-family:sans-serif;margin:1.5em} .feature{margin:1.5em 0;border-top:1px solid #ccc;padding-top:.5em} .bar{background:#4a7;height:.8em;display:inline-block} td{padding:0 .4em;font-size:.85em}")) }
            }
            body {
                h1 { (title) }
                p { "Each strip: top row, the " (TILES) " highest activations; bottom row, images at evenly spaced quantiles of the activations where the feature fires (lowest left). Tiles decoded: " span id="loaded" { "0" } }
                @for p in panels {
                    section class="feature" id=(format!("f{}", p.index)) {
                        h2 { "feature " (p.index) " — fires on " (format!("{:.1}", 100.0 * p.frequency)) "% of held-out images" }
                        img src=(p.png) alt=(format!("top and quantile images of feature {}", p.index));
                        table {
                            @let most = p.histogram.iter().map(|h| h.1).max().unwrap_or(1).max(1);
                            @for (name, count) in &p.histogram {
                                tr {
                                    td { (name) }
                                    td { (count) }
                                    td { span class="bar" style=(format!("width:{}px", 200 * count / most)) {} }
                                }
                            }
                        }
                    }
                }
                script { (PreEscaped(script)) }
            }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_the_top_and_the_quantiles_of_where_a_feature_fires() {
        let acts = Matrix::from_fn(40, 2, |r, c| if c == 0 { r as f32 - 9.0 } else { 0.0 });
        let (top, q) = feature_rows(&acts, 0).unwrap();
        assert_eq!(top, (30..40).rev().collect::<Vec<_>>());
        // Fires on rows 10..40 (30 rows): quantiles every 3rd, ending at the highest.
        assert_eq!(q, vec![12, 15, 18, 21, 24, 27, 30, 33, 36, 39]);
        assert!(feature_rows(&acts, 1).is_none());
    }

    #[test]
    fn the_page_escapes_values_and_the_png_decodes() {
        let images = Matrix::from_fn(3, 4, |r, c| (r * 4 + c) as f32 / 12.0);
        let png = tiles_png(&images, &[vec![0, 1], vec![2]], 2, 3).unwrap();
        let decoded = image::load_from_memory(&png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (16, 16));
        let html = page(
            "t <x>",
            &[FeaturePanel {
                index: 7,
                frequency: 0.25,
                png: "f.png".into(),
                histogram: vec![("bag & co".into(), 3)],
            }],
        );
        assert!(html.contains("t &lt;x&gt;") && html.contains("bag &amp; co"));
        assert!(html.contains("id=\"f7\"") && html.contains("25.0%"));
    }
}
