//! What a run found: per case the policy's answer, the final record and every failure, rendered
//! as a pass/fail table with field diffs, or serialized as JSON.

use std::fmt;

use converge_core::{Fields, Resolution};
use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::Value;

use crate::conflict::FinalRecord;

/// A policy's answer, or the panic that came instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// `Resolution::TakeLocal`.
    TakeLocal,
    /// `Resolution::TakeServer`.
    TakeServer,
    /// `Resolution::Merged`.
    Merged {
        /// The merged fields.
        fields: Fields,
        /// The notice for the UI.
        notice: String,
    },
    /// `Resolution::NeedsReview`.
    NeedsReview {
        /// Why.
        reason: String,
    },
    /// The policy panicked.
    Panicked {
        /// The panic message.
        message: String,
    },
}

impl From<&Resolution> for Answer {
    fn from(r: &Resolution) -> Answer {
        match r {
            Resolution::TakeLocal => Answer::TakeLocal,
            Resolution::TakeServer => Answer::TakeServer,
            Resolution::Merged { fields, notice } => Answer::Merged { fields: fields.clone(), notice: notice.clone() },
            Resolution::NeedsReview { reason } => Answer::NeedsReview { reason: reason.clone() },
        }
    }
}

impl Answer {
    /// The answer's kind: `take_local`, `take_server`, `merged`, `needs_review` or `panicked`.
    pub fn kind(&self) -> &'static str {
        match self {
            Answer::TakeLocal => "take_local",
            Answer::TakeServer => "take_server",
            Answer::Merged { .. } => "merged",
            Answer::NeedsReview { .. } => "needs_review",
            Answer::Panicked { .. } => "panicked",
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::TakeLocal | Answer::TakeServer => f.write_str(self.kind()),
            Answer::Merged { fields, notice } => write!(f, "merged {} ({notice:?})", Value::Object(fields.clone())),
            Answer::NeedsReview { reason } => write!(f, "needs_review ({reason:?})"),
            Answer::Panicked { message } => write!(f, "a panic ({message:?})"),
        }
    }
}

/// One field that differs between two records (`None`: no such field).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDiff {
    /// The field.
    pub field: String,
    /// Its expected value (for an order failure: in the case's order).
    pub expected: Option<Value>,
    /// Its value got (for an order failure: in the swapped order).
    pub got: Option<Value>,
}

/// The fields whose values differ between `expected` and `got` (a deleted record has none), in
/// field order.
pub fn diff_fields(expected: Option<&Fields>, got: Option<&Fields>) -> Vec<FieldDiff> {
    let empty = Fields::new();
    let (expected, got) = (expected.unwrap_or(&empty), got.unwrap_or(&empty));
    let mut keys: Vec<&String> = expected.keys().chain(got.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| expected.get(*k) != got.get(*k))
        .map(|k| FieldDiff { field: k.clone(), expected: expected.get(k).cloned(), got: got.get(k).cloned() })
        .collect()
}

/// One way a case failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "failure", rename_all = "snake_case")]
pub enum Failure {
    /// The answer or the record is not what the case expects.
    Unexpected {
        /// The expectation, for people.
        expected: String,
        /// What came out, for people.
        got: String,
        /// The fields that differ: the expected merge or record against the one got.
        diff: Vec<FieldDiff>,
    },
    /// The same input gave two different answers.
    Nondeterministic {
        /// The first answer.
        first: Answer,
        /// The second answer, to the identical input.
        second: Answer,
    },
    /// The two arrival orders of the same edits end differently.
    OrderDependent {
        /// How the case's order ends.
        this_order: FinalRecord,
        /// How the swapped order ends.
        swapped: FinalRecord,
        /// The answer in the swapped order (`None`: no conflict there; the server took the
        /// local intent).
        swapped_answer: Option<Answer>,
        /// The fields that differ (`expected`: this order, `got`: swapped).
        diff: Vec<FieldDiff>,
        /// A hint when the case leaves the swapped order without clocks.
        note: Option<String>,
    },
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// The policy's answer.
    pub answer: Answer,
    /// How the conflict ends (`None` if the policy panicked).
    pub record: Option<FinalRecord>,
    /// Everything that went wrong; empty when the case passed.
    pub failures: Vec<Failure>,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl Serialize for CaseResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CaseResult", 5)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("passed", &self.passed())?;
        st.serialize_field("answer", &self.answer)?;
        st.serialize_field("record", &self.record)?;
        st.serialize_field("failures", &self.failures)?;
        st.end()
    }
}

/// The result of running a policy against a cases file.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The name of the policy that ran.
    pub policy: String,
    /// The policy the cases file says it is for.
    pub cases_for: String,
    /// Whether both arrival orders were checked.
    pub order_independent: bool,
    /// One result per case, in file order.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(CaseResult::passed)
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed()).count()
    }
}

impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Report", 7)?;
        st.serialize_field("policy", &self.policy)?;
        st.serialize_field("cases_for", &self.cases_for)?;
        st.serialize_field("order_independent", &self.order_independent)?;
        st.serialize_field("passed", &self.passed())?;
        st.serialize_field("total", &self.results.len())?;
        st.serialize_field("failed", &self.failed())?;
        st.serialize_field("results", &self.results)?;
        st.end()
    }
}

fn value_text(v: Option<&Value>) -> String {
    v.map_or_else(|| "(no field)".to_owned(), Value::to_string)
}

fn write_diff(f: &mut fmt::Formatter<'_>, diff: &[FieldDiff], left: &str, right: &str) -> fmt::Result {
    for d in diff {
        writeln!(
            f,
            "          {}: {left} {}, {right} {}",
            d.field,
            value_text(d.expected.as_ref()),
            value_text(d.got.as_ref())
        )?;
    }
    Ok(())
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unexpected { expected, got, diff } => {
                writeln!(f, "        expected {expected}")?;
                writeln!(f, "        got      {got}")?;
                write_diff(f, diff, "expected", "got")
            }
            Failure::Nondeterministic { first, second } => {
                writeln!(f, "        not deterministic: the same input gave {first}")?;
                writeln!(f, "                           and then       {second}")
            }
            Failure::OrderDependent { this_order, swapped, swapped_answer, diff, note } => {
                writeln!(f, "        depends on the arrival order:")?;
                writeln!(f, "          this order ends {this_order}")?;
                match swapped_answer {
                    Some(answer) => {
                        writeln!(f, "          swapped, the policy answers {answer} and it ends {swapped}")?
                    }
                    None => writeln!(f, "          swapped, there is no conflict and it ends {swapped}")?,
                }
                write_diff(f, diff, "this order", "swapped")?;
                match note {
                    Some(note) => writeln!(f, "          note: {note}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// `name` within `width` characters: a longer one keeps its start and ends with `…`, so the
/// table stays aligned (the JSON report keeps every name whole).
fn fit(name: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if name.chars().count() <= width {
        return name.into();
    }
    let mut short: String = name.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    short.into()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let orders = if self.order_independent { ", both arrival orders checked" } else { "" };
        writeln!(
            f,
            "policy {:?}: {} case(s) from a file for {:?}{orders}",
            self.policy,
            self.results.len(),
            self.cases_for
        )?;
        if self.policy != self.cases_for {
            writeln!(f, "note: the cases were written for {:?}, not {:?}", self.cases_for, self.policy)?;
        }
        let width = self.results.iter().map(|r| r.name.chars().count()).max().unwrap_or(0).clamp(4, 48);
        writeln!(f, "  {:<8}{:<width$}  answer", "result", "case")?;
        for r in &self.results {
            let mark = if r.passed() { "PASS" } else { "FAIL" };
            writeln!(f, "  {mark:<8}{:<width$}  {}", fit(&r.name, width), r.answer.kind())?;
            for failure in &r.failures {
                write!(f, "{failure}")?;
            }
        }
        let failed = self.failed();
        write!(f, "{} passed, {failed} failed", self.results.len() - failed)
    }
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn long_case_names_are_shortened_to_keep_the_table_aligned() {
        assert_eq!(fit("short", 48), "short");
        let long = "x".repeat(60);
        let shown = fit(&long, 48);
        assert_eq!(shown.chars().count(), 48);
        assert!(shown.ends_with('…'));
    }
}
