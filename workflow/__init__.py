"""Running the scripts as steps: recipes and child processes."""
