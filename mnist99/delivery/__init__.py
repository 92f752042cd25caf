"""What is delivered: the members combined into one ensemble model, its export, and loading it back."""
