//! The paper's experiments, each a function from validated parameters to a [`Report`]: tables
//! (printed and written as `results.md`), the raw numbers (`results.json`) and SVG figures.
//! Every experiment has a quick setting (minutes on 2 cores, run in CI with assertions on the
//! results) and a full one (the published sizes).

pub mod absorption;
pub mod activations;
pub mod additivity;
pub mod amortisation;
pub mod cs_bound;
pub mod fashion;
pub mod identifiability;
pub mod methods;
pub mod natural_images;
pub mod phase;
pub mod plot;
pub mod sae_runs;
pub mod scaling;
pub mod scenes;
pub mod stability;
pub mod sweep;
pub mod toy;

use serde::Serialize;
use serde_json::Value;
use sparsecode::io::atomic::OutputDir;
use sparsecode::{Error, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// How long an experiment's full (published-size) setting takes on 2 cores, as measured by
/// `scripts/reproduce-experiments.sh`; `None` for those that take seconds either way.
pub fn full_duration(name: &str) -> Option<&'static str> {
    match name {
        "amortisation" => Some("about 15 minutes"),
        "scaling" => Some("about an hour"),
        "phase-transition" => Some("about 35 minutes"),
        "toy-superposition" => Some("about a minute"),
        "sweep" | "stability" => Some("a few minutes"),
        "identifiability" => Some("about 15 minutes"),
        "natural-images" => Some("about 30 minutes"),
        "scenes" => Some("about 10 minutes"),
        "fashion-mnist" => Some("about 5 minutes"),
        _ => None,
    }
}

/// A table of results.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Table {
    /// Caption.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells, already formatted.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table in GitHub Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(s, "**{}**\n", self.title);
        }
        let header: Vec<String> = self.header.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(s, "| {} |", header.join(" | "));
        let _ = writeln!(
            s,
            "|{}|",
            self.header
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        );
        let cell = |c: &String| c.replace('|', "\\|");
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(cell).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        s
    }
}

/// What an experiment produced.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Experiment name (as on the command line).
    pub name: String,
    /// One-paragraph description of the setup.
    pub summary: String,
    /// Tables, in reading order.
    pub tables: Vec<Table>,
    /// Remarks under the tables (comparisons, verdicts).
    pub notes: Vec<String>,
    /// Machine-readable results (parameters and every number).
    pub json: Value,
    /// SVG figures: `(file name, document)`.
    pub plots: Vec<(String, String)>,
    /// Other files: PNG figures, HTML pages (linked from `results.md`) and, in subfolders, the
    /// pages' own images: `(path inside the output folder, bytes)`.
    pub images: Vec<(String, Vec<u8>)>,
}

impl Report {
    /// The Markdown document written as `results.md`.
    pub fn to_markdown(&self) -> String {
        let mut s = format!("# Experiment: {}\n\n{}\n\n", self.name, self.summary);
        for t in &self.tables {
            s.push_str(&t.to_markdown());
            s.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        // Figures at the top level are shown; pages are linked; files in subfolders (a
        // page's own images) are left to their page.
        let files: Vec<&String> = self
            .plots
            .iter()
            .map(|(f, _)| f)
            .chain(self.images.iter().map(|(f, _)| f))
            .filter(|f| !f.contains('/'))
            .collect();
        if !files.is_empty() {
            s.push('\n');
            for file in files {
                if file.ends_with(".html") {
                    let _ = writeln!(s, "[{file}]({file})");
                } else {
                    let _ = writeln!(s, "![{file}]({file})");
                }
            }
        }
        s
    }

    /// Writes `results.json`, `results.md` and the figures into `dir` atomically (a temporary
    /// folder renamed into place); `record` (config, seed, versions) is merged into the JSON.
    pub fn write(&self, dir: &Path, force: bool, record: Value) -> Result<PathBuf> {
        self.write_into(OutputDir::create(dir, force)?, record)
    }

    /// [`Self::write`] into an output folder the caller created before the experiment ran (and
    /// in which the experiment may have written files of its own, such as activation stores).
    pub fn write_into(&self, out: OutputDir, record: Value) -> Result<PathBuf> {
        let mut json = serde_json::json!({
            "experiment": self.name,
            "summary": self.summary,
            "results": self.json,
            "tables": self.tables,
            "notes": self.notes,
            "plots": self.plots.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            "images": self.images.iter().map(|(f, _)| f).collect::<Vec<_>>(),
        });
        if let (Some(obj), Value::Object(rec)) = (json.as_object_mut(), record) {
            obj.extend(rec);
        }
        sparsecode::io::atomic::write_json_atomic(&out.join("results.json"), &json)?;
        sparsecode::io::atomic::write_atomic(
            &out.join("results.md"),
            self.to_markdown().as_bytes(),
        )?;
        for (file, svg) in &self.plots {
            sparsecode::io::atomic::write_atomic(&out.join(file), svg.as_bytes())?;
        }
        for (file, bytes) in &self.images {
            let path = out.join(file);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            sparsecode::io::atomic::write_atomic(&path, bytes)?;
        }
        out.commit()
    }
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

/// `mean ± sd` with three decimals.
pub fn fmt_mean_sd(v: &[f64]) -> String {
    let (m, s) = mean_sd(v);
    if v.len() > 1 {
        format!("{m:.3} ± {s:.3}")
    } else {
        format!("{m:.3}")
    }
}

/// Fails unless `v` is non-empty; `name` is the parameter.
pub(crate) fn require_grid<T>(name: &str, v: &[T]) -> Result<()> {
    if v.is_empty() {
        return Err(Error::param(
            name,
            "the grid is empty: give at least one value",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_writes_markdown_json_and_plots_atomically() {
        let t = tempfile::tempdir().unwrap();
        let mut table = Table::new("MCC", &["method", "code MCC"]);
        table.push(vec!["SAE".into(), fmt_mean_sd(&[0.5, 0.7])]);
        let r = Report {
            name: "demo".into(),
            summary: "a test".into(),
            tables: vec![table],
            notes: vec!["ITO wins".into()],
            json: serde_json::json!({"x": 1}),
            plots: vec![("a.svg".into(), "<svg></svg>".into())],
            images: vec![("b.png".into(), vec![0x89, b'P', b'N', b'G'])],
        };
        let dir = t.path().join("out");
        r.write(&dir, false, serde_json::json!({"seed": 3}))
            .unwrap();
        let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
        assert!(md.contains("| SAE | 0.600 ± 0.141 |"), "{md}");
        assert!(md.contains("- ITO wins") && md.contains("![a.svg](a.svg)"));
        let j: Value =
            serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(j["results"]["x"], 1);
        assert_eq!(j["seed"], 3);
        assert!(dir.join("a.svg").exists());
        assert_eq!(std::fs::read(dir.join("b.png")).unwrap(), b"\x89PNG");
        assert!(md.contains("![b.png](b.png)") && j["images"][0] == "b.png");
        // Refuses to overwrite without force.
        assert!(r.write(&dir, false, Value::Null).is_err());
        assert_eq!(mean_sd(&[2.0]), (2.0, 0.0));
        assert!(require_grid::<f64>("k", &[])
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }
}
