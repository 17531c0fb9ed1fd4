-- The joins repeat the page's lower bound ($1) so that a generic plan (Postgres reuses one
-- for a prepared statement) starts each index scan at the page, not at the first user.
SELECT u.id, t.id, t.calories, t.protein_g, t.fat_g, t.carbs_g,
       CASE WHEN s.user_id IS NULL THEN 0 ELSE 1 END
FROM users u
LEFT JOIN targets t ON t.user_id = u.id AND t.active = 1 AND t.user_id > $1
LEFT JOIN daily_target_snapshots s ON s.user_id = u.id AND s.date = $2 AND s.user_id > $1
WHERE u.id > $1 AND u.withdrawn_at IS NULL
ORDER BY u.id
LIMIT $3
