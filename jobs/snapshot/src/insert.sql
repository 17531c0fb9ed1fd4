INSERT INTO daily_target_snapshots (user_id, date, target_id, calories, protein_g, fat_g, carbs_g, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (user_id, date) DO NOTHING
