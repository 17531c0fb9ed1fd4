SELECT u.id, t.id, t.calories, t.protein_g, t.fat_g, t.carbs_g,
       CASE WHEN EXISTS (SELECT 1 FROM daily_target_snapshots s WHERE s.user_id = u.id AND s.date = $2)
            THEN 1 ELSE 0 END
FROM users u
LEFT JOIN targets t ON t.user_id = u.id AND t.active = 1
WHERE u.id > $1 AND u.withdrawn_at IS NULL
ORDER BY u.id
LIMIT $3
