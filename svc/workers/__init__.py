"""Frontend worker processes around one model owner (`--frontend_workers=N`); nothing imported here."""
