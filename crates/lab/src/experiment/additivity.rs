//! Additivity of sentence embeddings (the seed paper's first experiment): if an embedding f
//! stores concepts as directions that add, then f("A and B") should point along f(A) + f(B).
//! For a built-in list of concept pairs we measure
//! s = cos(f(AB) - f(0), f(A) + f(B) - 2 f(0)) (REFERENCE section 3; f(0) = the empty text)
//! and the same statistic against a null of unrelated pairs (the composite of pair i against
//! the parts of two other pairs), report both distributions, the effect size (Cohen's d) and
//! how often a pair beats its own null. The embedder is a parameter (MiniLM in the CLI).

use super::plot::{LinePlot, Series};
use super::{Report, Table};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;
use sparsecode::linalg::cosine;
use sparsecode::{Error, Result};

/// The built-in concept pairs (123): everyday things, places, roles, actions and ideas.
pub const PAIRS: &[(&str, &str)] = &[
    ("coffee", "milk"),
    ("bread", "butter"),
    ("salt", "pepper"),
    ("rice", "beans"),
    ("apples", "oranges"),
    ("tea", "biscuits"),
    ("cheese", "wine"),
    ("fish", "chips"),
    ("eggs", "bacon"),
    ("pasta", "tomato sauce"),
    ("chocolate", "strawberries"),
    ("soup", "salad"),
    ("cats", "dogs"),
    ("horses", "cattle"),
    ("lions", "tigers"),
    ("whales", "dolphins"),
    ("eagles", "hawks"),
    ("bees", "flowers"),
    ("wolves", "sheep"),
    ("snakes", "lizards"),
    ("sharks", "octopuses"),
    ("owls", "mice"),
    ("ants", "spiders"),
    ("frogs", "ponds"),
    ("the ocean", "the mountains"),
    ("a river", "a bridge"),
    ("the desert", "a camel"),
    ("the forest", "a cabin"),
    ("a city", "traffic"),
    ("a village", "a church"),
    ("an island", "a lighthouse"),
    ("the moon", "the stars"),
    ("rain", "thunder"),
    ("snow", "ice"),
    ("the sun", "the beach"),
    ("a volcano", "lava"),
    ("a doctor", "a hospital"),
    ("a teacher", "a classroom"),
    ("a pilot", "an airplane"),
    ("a chef", "a kitchen"),
    ("a farmer", "a tractor"),
    ("a judge", "a courtroom"),
    ("a soldier", "a rifle"),
    ("a painter", "a canvas"),
    ("a sailor", "a ship"),
    ("a lawyer", "a contract"),
    ("a nurse", "a patient"),
    ("a poet", "a notebook"),
    ("a king", "a castle"),
    ("a priest", "a prayer"),
    ("a banker", "money"),
    ("a scientist", "a laboratory"),
    ("a musician", "a guitar"),
    ("a miner", "coal"),
    ("running", "swimming"),
    ("singing", "dancing"),
    ("reading", "writing"),
    ("cooking", "cleaning"),
    ("fishing", "hunting"),
    ("painting", "drawing"),
    ("laughing", "crying"),
    ("buying", "selling"),
    ("sleeping", "dreaming"),
    ("building", "repairing"),
    ("teaching", "learning"),
    ("winning", "losing"),
    ("war", "peace"),
    ("love", "hate"),
    ("freedom", "justice"),
    ("taxes", "spending"),
    ("trade", "tariffs"),
    ("education", "health care"),
    ("crime", "punishment"),
    ("religion", "science"),
    ("wealth", "poverty"),
    ("birth", "death"),
    ("hope", "fear"),
    ("memory", "forgetting"),
    ("a hammer", "nails"),
    ("a pen", "paper"),
    ("a lock", "a key"),
    ("a needle", "thread"),
    ("a car", "a garage"),
    ("a phone", "a charger"),
    ("a violin", "a piano"),
    ("a clock", "a calendar"),
    ("a camera", "a photograph"),
    ("a map", "a compass"),
    ("shoes", "socks"),
    ("a hat", "a coat"),
    ("a bed", "a pillow"),
    ("a table", "chairs"),
    ("a window", "curtains"),
    ("a train", "a station"),
    ("a bicycle", "a helmet"),
    ("a rocket", "space"),
    ("a computer", "software"),
    ("a newspaper", "an editor"),
    ("a museum", "paintings"),
    ("a library", "books"),
    ("a stadium", "football"),
    ("a theatre", "actors"),
    ("a school", "students"),
    ("a factory", "workers"),
    ("a bank", "loans"),
    ("a market", "vegetables"),
    ("a garden", "roses"),
    ("a farm", "wheat"),
    ("a prison", "guards"),
    ("a hospital", "surgery"),
    ("an election", "voters"),
    ("a parliament", "laws"),
    ("an army", "generals"),
    ("a navy", "submarines"),
    ("a railway", "steam engines"),
    ("a harbour", "fishing boats"),
    ("a mine", "gold"),
    ("winter", "fireplaces"),
    ("summer", "ice cream"),
    ("autumn", "leaves"),
    ("spring", "blossoms"),
    ("morning", "breakfast"),
    ("night", "lanterns"),
];

/// One pair's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct PairScore {
    /// First concept.
    pub a: String,
    /// Second concept.
    pub b: String,
    /// cos(f(A and B) - f0, f(A) + f(B) - 2 f0).
    pub matched: f64,
    /// The same composite against the parts of two other pairs.
    pub null: f64,
    /// cos(f(A and B), f(A) + f(B)) without centring.
    pub matched_plain: f64,
}

/// Cohen's d of two samples (pooled standard deviation).
pub fn cohens_d(x: &[f64], y: &[f64]) -> f64 {
    let (mx, sx) = super::mean_sd(x);
    let (my, sy) = super::mean_sd(y);
    let nx = x.len() as f64;
    let ny = y.len() as f64;
    let pooled = (((nx - 1.0) * sx * sx + (ny - 1.0) * sy * sy) / (nx + ny - 2.0)).sqrt();
    (mx - my) / pooled.max(1e-12)
}

/// Runs the experiment on `pairs` with embedder `embed` (unit or raw vectors, one per text).
pub fn run(
    pairs: &[(&str, &str)],
    seed: u64,
    embed: &mut dyn FnMut(&[String]) -> Result<Vec<Vec<f32>>>,
) -> Result<Report> {
    if pairs.len() < 3 {
        return Err(Error::param(
            "pairs",
            "at least 3 pairs (the null takes parts of two others)",
        ));
    }
    let mut texts = vec![String::new()];
    for (a, b) in pairs {
        texts.push(a.to_string());
        texts.push(b.to_string());
        texts.push(format!("{a} and {b}"));
    }
    let e = embed(&texts)?;
    if e.len() != texts.len() {
        return Err(Error::shape(
            "embedder output",
            format!("{} embeddings", texts.len()),
            e.len().to_string(),
        ));
    }
    let v = |i: usize| -> Vec<f64> { e[i].iter().map(|&x| x as f64).collect() };
    let f0 = v(0);
    let part = |i: usize, which: usize| v(1 + 3 * i + which);
    let sub = |x: &[f64], y: &[f64], k: f64| -> Vec<f64> {
        x.iter().zip(y).map(|(a, b)| a - k * b).collect()
    };
    let add = |x: &[f64], y: &[f64]| -> Vec<f64> { x.iter().zip(y).map(|(a, b)| a + b).collect() };
    // Null partners: two other pairs per pair, drawn by a seeded shuffle (never the pair itself).
    let n = pairs.len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut scores = Vec::with_capacity(n);
    for i in 0..n {
        let pos = order.iter().position(|&k| k == i).unwrap_or(0);
        let j = order[(pos + 1) % n];
        let k = order[(pos + 2) % n];
        let ab = sub(&part(i, 2), &f0, 1.0);
        let sum = sub(&add(&part(i, 0), &part(i, 1)), &f0, 2.0);
        let null_sum = sub(&add(&part(j, 0), &part(k, 1)), &f0, 2.0);
        scores.push(PairScore {
            a: pairs[i].0.to_string(),
            b: pairs[i].1.to_string(),
            matched: cosine(&ab, &sum),
            null: cosine(&ab, &null_sum),
            matched_plain: cosine(&part(i, 2), &add(&part(i, 0), &part(i, 1))),
        });
    }
    let m: Vec<f64> = scores.iter().map(|s| s.matched).collect();
    let z: Vec<f64> = scores.iter().map(|s| s.null).collect();
    let d = cohens_d(&m, &z);
    let wins = scores.iter().filter(|s| s.matched > s.null).count();
    let mut t = Table::new(
        "Additivity: cos(f(A and B) - f0, f(A) + f(B) - 2 f0)",
        &["statistic", "pairs", "mean ± sd", "min", "max"],
    );
    for (name, x) in [("concept pairs", &m), ("unrelated (null)", &z)] {
        t.push(vec![
            name.into(),
            x.len().to_string(),
            super::fmt_mean_sd(x),
            format!("{:.3}", x.iter().copied().fold(f64::INFINITY, f64::min)),
            format!("{:.3}", x.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        ]);
    }
    let plain: Vec<f64> = scores.iter().map(|s| s.matched_plain).collect();
    let notes = vec![
        format!("Effect size (Cohen's d, pairs vs null): {d:.2}; a pair beats its own null in {wins} of {n} cases."),
        format!("Uncentred cos(f(A and B), f(A) + f(B)): {}.", super::fmt_mean_sd(&plain)),
    ];
    // Histograms of the two distributions, over the range they occupy (0.02-wide bins).
    let lo = (m.iter().chain(&z).copied().fold(1.0f64, f64::min) * 10.0).floor() / 10.0;
    let bins = (((1.0 - lo) / 0.02).round() as usize).max(1);
    let hist = |x: &[f64]| -> Vec<(f64, f64)> {
        let mut c = vec![0usize; bins];
        for &v in x {
            let b = ((v - lo) / (1.0 - lo) * bins as f64)
                .floor()
                .clamp(0.0, bins as f64 - 1.0);
            c[b as usize] += 1;
        }
        c.iter()
            .enumerate()
            .map(|(i, &k)| (lo + (i as f64 + 0.5) * (1.0 - lo) / bins as f64, k as f64))
            .collect()
    };
    let plot = LinePlot {
        title: "Additivity of MiniLM sentence embeddings".into(),
        x_label: "cos(f(A and B) - f0, f(A) + f(B) - 2 f0)".into(),
        y_label: "pairs".into(),
        series: vec![
            Series::line("concept pairs", hist(&m)),
            Series::dashed("unrelated pairs (null)", hist(&z)),
        ],
        ..LinePlot::default()
    };
    Ok(Report {
        name: "additivity".into(),
        summary: format!(
            "Sentence embeddings f of {n} built-in concept pairs: is f(\"A and B\") the sum of f(A) and f(B)? Statistic: cosine of the composite and the sum of the parts, both taken relative to the empty text's embedding f0; null: the same composite against the parts of two unrelated pairs."
        ),
        tables: vec![t],
        notes,
        json: json!({"pairs": scores, "cohens_d": d, "wins": wins, "n": n}),
        images: Vec::new(),
        plots: vec![("additivity.svg".into(), plot.to_svg())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_list_has_at_least_100_distinct_pairs() {
        assert!(PAIRS.len() >= 100);
        let mut seen = std::collections::HashSet::new();
        assert!(PAIRS.iter().all(|p| seen.insert(*p)));
    }

    #[test]
    fn an_additive_embedder_scores_one_and_beats_the_null() {
        // Words are random directions; a composite is the sum of its words (plus "and").
        let vocab: std::collections::HashMap<String, Vec<f32>> = PAIRS
            .iter()
            .flat_map(|(a, b)| [a.to_string(), b.to_string()])
            .chain(["and".to_string()])
            .enumerate()
            .map(|(i, w)| {
                let v: Vec<f32> = (0..64)
                    .map(|k| ((i * 131 + k * 17) % 97) as f32 / 97.0 - 0.5)
                    .collect();
                (w, v)
            })
            .collect();
        let mut embed = |texts: &[String]| -> Result<Vec<Vec<f32>>> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.0f32; 64];
                    if let Some((a, b)) = t.split_once(" and ") {
                        for w in [a, b] {
                            v.iter_mut().zip(&vocab[w]).for_each(|(x, y)| *x += y);
                        }
                    } else if !t.is_empty() {
                        v.iter_mut()
                            .zip(&vocab[t.as_str()])
                            .for_each(|(x, y)| *x += y);
                    }
                    v
                })
                .collect())
        };
        let r = run(PAIRS, 1, &mut embed).unwrap();
        let d = r.json["cohens_d"].as_f64().unwrap();
        assert!(d > 2.0, "{d}");
        for p in r.json["pairs"].as_array().unwrap() {
            assert!((p["matched"].as_f64().unwrap() - 1.0).abs() < 1e-6);
        }
        assert!(run(&PAIRS[..2], 1, &mut embed).is_err());
    }
}
