"""Students: personal details sealed field by field under each student's own data key."""
