"""Studies: a seeded grid of training runs over params.yaml (`design`), their statistics
(`stats`), and their results, report and MLflow parent run (`summary`)."""
