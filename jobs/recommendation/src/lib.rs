//! `recommendation`: today's meal recommendation for paying and trial users
//! (seed 000 §1-2, GenerateDailyMealRecommendationsJob).
//!
//! Once a day, every active TRIAL or PAID user who has logged each of the last
//! five days gets one `meal_recommendations` row for the base date, so the
//! suggestion is waiting when they open the app.
//!
//! - **Base date**: the run date — the local date of the scheduled instant in
//!   the job's time zone (UTC unless configured), or `--date D`. The five days
//!   are `base − 5 ..= base − 1`.
//! - **Items**: active (`withdrawn_at IS NULL`) users on the TRIAL or PAID
//!   plan, in id order. FREE users are not listed at all, so the item counts
//!   are the users the job is for. Per item, in this order:
//!   - a recommendation for the base date exists → skipped, `already exists`;
//!   - no active target → skipped, `no active target` (the budget is derived
//!     from it);
//!   - fewer than five daily reports in the five days → skipped,
//!     `not enough daily reports (N of 5)`;
//!   - otherwise one recommendation is inserted. Any other error (a database
//!     constraint, say) fails that user only; the host rolls it back and goes on.
//! - **What is recommended** (deterministic): the day's calorie budget is the
//!   target plus half the gap between the target and the five-day average
//!   (eat a little less after over-eating days), kept within ±20 % of the
//!   target; it is split 25/35/40 % over breakfast, lunch and dinner, and each
//!   meal is the dish from a fixed menu closest to its share — the richest in
//!   protein among those within 150 kcal when the average protein fell short
//!   of the target by more than 10 %. Stored as JSON text in `body`.
//! - **Speed**: the page query carries the target, the report count and sums
//!   and whether today's recommendation exists, so an item is one `INSERT`.

use std::rc::Rc;

use sundial_guest::{Context, Item, ItemJob, JobError, JobInfo, Outcome, Page, db, time};

struct Recommendation;

const PAGE: usize = 1000;

/// Daily reports needed: one for each of the days before the base date.
const DAYS: i64 = 5;

const LIST: &str = "\
    SELECT u.id, t.calories, t.protein_g, \
           CASE WHEN EXISTS (SELECT 1 FROM meal_recommendations m \
                             WHERE m.user_id = u.id AND m.generated_for_date = $3) THEN 1 ELSE 0 END, \
           (SELECT COUNT(*) FROM daily_nutrition_reports r WHERE r.user_id = u.id AND r.date >= $2 AND r.date < $3), \
           (SELECT SUM(r.calories) FROM daily_nutrition_reports r \
            WHERE r.user_id = u.id AND r.date >= $2 AND r.date < $3), \
           (SELECT SUM(r.protein_g) FROM daily_nutrition_reports r \
            WHERE r.user_id = u.id AND r.date >= $2 AND r.date < $3) \
    FROM users u \
    LEFT JOIN targets t ON t.user_id = u.id AND t.active = 1 \
    WHERE u.id > $1 AND u.withdrawn_at IS NULL AND u.plan IN ('TRIAL', 'PAID') \
    ORDER BY u.id \
    LIMIT $4";

const INSERT: &str = "\
    INSERT INTO meal_recommendations (user_id, generated_for_date, calorie_budget, body, created_at) \
    VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (user_id, generated_for_date) DO NOTHING";

impl ItemJob for Recommendation {
    fn info() -> JobInfo {
        JobInfo::new(
            "recommendation",
            "Generates today's meal recommendation for TRIAL and PAID users with five days of reports",
            "0 7 * * *",
        )
        .read_write_database()
    }

    fn items(ctx: &Context, cursor: Option<&str>) -> Result<Page, JobError> {
        let after = Page::after_id(cursor)?;
        let run = RunConsts::get(ctx)?;
        let rows = db::query(
            LIST,
            &[after.into(), run.first_day.as_str().into(), run.base_date.as_str().into(), (PAGE as i64).into()],
        )?;
        Ok(Page::from_rows(rows, PAGE))
    }

    fn run_item(ctx: &Context, item: &Item) -> Result<Outcome, JobError> {
        let user = item.get(0).as_i64().ok_or_else(|| JobError::fatal(format!("item {} has no user id", item.key)))?;
        if item.get(3).as_i64() == Some(1) {
            return Err(JobError::skip("already exists"));
        }
        let Some(target) = item.get(1).as_f64() else {
            return Err(JobError::skip("no active target"));
        };
        let reports = item.get(4).as_i64().unwrap_or(0);
        if reports < DAYS {
            return Err(JobError::skip(format!("not enough daily reports ({reports} of {DAYS})")));
        }
        let average = item.get(5).as_f64().unwrap_or(0.0) / reports as f64;
        let protein_target = item.get(2).as_f64();
        let protein_average = item.get(6).as_f64().map(|p| p / reports as f64);
        let run = RunConsts::get(ctx)?;
        let plan = recommend(target, average, protein_target, protein_average);
        let inserted = db::execute(
            INSERT,
            &[
                user.into(),
                run.base_date.as_str().into(),
                plan.budget.into(),
                plan.to_json(&run.base_date, target, average).into(),
                run.created_at.as_str().into(),
            ],
        )?;
        if inserted == 0 {
            // Written by someone else since the page was listed.
            return Err(JobError::skip("already exists"));
        }
        Ok(Outcome::changed(inserted))
    }
}

/// A dish on the fixed menu: name, kcal, protein grams.
type Dish = (&'static str, i64, i64);

/// The meals of a day, their share of the budget and their menu.
const MEALS: [(&str, f64, &[Dish]); 3] = [
    (
        "breakfast",
        0.25,
        &[
            ("greek yogurt with granola", 300, 18),
            ("oatmeal with berries", 350, 12),
            ("natto rice with miso soup", 450, 20),
            ("salmon onigiri and boiled egg", 520, 28),
        ],
    ),
    (
        "lunch",
        0.35,
        &[
            ("chicken salad bowl", 550, 40),
            ("tofu poke bowl", 600, 30),
            ("soba with vegetable tempura", 700, 22),
            ("beef gyudon", 850, 35),
        ],
    ),
    (
        "dinner",
        0.40,
        &[
            ("grilled salmon set", 650, 42),
            ("vegetable curry", 700, 18),
            ("chicken teriyaki with rice", 800, 45),
            ("pork ginger set", 900, 38),
        ],
    ),
];

/// How far from a meal's share a dish may be and still be preferred for protein.
const PROTEIN_SLACK_KCAL: f64 = 150.0;

struct Plan {
    budget: i64,
    meals: Vec<(&'static str, Dish)>,
}

fn recommend(target: f64, average: f64, protein_target: Option<f64>, protein_average: Option<f64>) -> Plan {
    let budget = (target + (target - average) / 2.0).clamp(target * 0.8, target * 1.2);
    let budget = (budget / 10.0).round() * 10.0;
    let protein_short = matches!((protein_target, protein_average), (Some(t), Some(a)) if a < t * 0.9);
    let meals = MEALS
        .iter()
        .map(|(meal, share, menu)| {
            let want = budget * share;
            let off = |d: &Dish| (d.1 as f64 - want).abs();
            // Menus are non-empty constants; the fallback only satisfies the types.
            let closest = menu.iter().min_by(|a, b| off(a).total_cmp(&off(b))).copied().unwrap_or(("", 0, 0));
            let dish = if protein_short {
                menu.iter()
                    .filter(|d| off(d) <= PROTEIN_SLACK_KCAL)
                    .max_by_key(|d| d.2)
                    .copied()
                    .filter(|d| d.2 > closest.2)
                    .unwrap_or(closest)
            } else {
                closest
            };
            (*meal, dish)
        })
        .collect();
    Plan { budget: budget as i64, meals }
}

impl Plan {
    /// The recommendation as JSON (names are fixed ASCII, nothing to escape).
    fn to_json(&self, base_date: &str, target: f64, average: f64) -> String {
        let meals: Vec<String> = self
            .meals
            .iter()
            .map(|(meal, (name, kcal, protein))| {
                format!(r#"{{"meal":"{meal}","dish":"{name}","calories":{kcal},"protein_g":{protein}}}"#)
            })
            .collect();
        let total: i64 = self.meals.iter().map(|(_, d)| d.1).sum();
        format!(
            r#"{{"base_date":"{base_date}","target_calories":{},"average_calories_5d":{},"calorie_budget":{},"total_calories":{total},"meals":[{}]}}"#,
            target.round() as i64,
            average.round() as i64,
            self.budget,
            meals.join(",")
        )
    }
}

/// What every item of one execution shares, computed once per execution
/// ([`sundial_guest::per_execution`]).
struct RunConsts {
    base_date: String,
    first_day: String,
    created_at: String,
}

impl RunConsts {
    fn get(ctx: &Context) -> Result<Rc<RunConsts>, JobError> {
        sundial_guest::per_execution(ctx, || {
            let base = ctx.run_date()?;
            Ok(RunConsts {
                base_date: base.to_string(),
                first_day: base.add_days(-DAYS).to_string(),
                created_at: time::iso_utc(time::now_ms()),
            })
        })
    }
}

sundial_guest::export_item_job!(Recommendation);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_eating_lowers_the_budget_and_meals_follow_it() {
        let p = recommend(2000.0, 2400.0, None, None);
        assert_eq!(p.budget, 1800);
        let names: Vec<&str> = p.meals.iter().map(|(_, d)| d.0).collect();
        assert_eq!(names, ["natto rice with miso soup", "tofu poke bowl", "vegetable curry"]);
        // Clamped to ±20 % of the target.
        assert_eq!(recommend(2000.0, 4000.0, None, None).budget, 1600);
        assert_eq!(recommend(2000.0, 0.0, None, None).budget, 2400);
    }

    #[test]
    fn short_protein_prefers_protein_rich_dishes_nearby() {
        let p = recommend(2000.0, 2400.0, Some(125.0), Some(80.0));
        let names: Vec<&str> = p.meals.iter().map(|(_, d)| d.0).collect();
        assert_eq!(names, ["salmon onigiri and boiled egg", "chicken salad bowl", "chicken teriyaki with rice"]);
        let json = p.to_json("2026-11-22", 2000.0, 2400.0);
        assert!(json.starts_with(r#"{"base_date":"2026-11-22","target_calories":2000,"#), "{json}");
    }
}
