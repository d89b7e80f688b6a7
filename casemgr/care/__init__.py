"""The care programme: categories, case files, pairing, support logs, home visits, tasks."""
