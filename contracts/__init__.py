"""The contracts between the stages: defined once here, imported by the writer and the reader.

Nothing here runs a model or imports a stage. The stages stack on top of it, imports flowing one way:

    contracts  ←  trainer  ←  benchmarks  ←  analysis  ←  srdpo_eval (command line, reproduce)

- :mod:`contracts.run_dir`    the run-directory layout and its file names; models.json
- :mod:`contracts.ids`        model, checkpoint and judge ids
- :mod:`contracts.objectives` the objective registry (name, p ⊕ x or not, base objective, label, colour)
- :mod:`contracts.benches`    the benchmark registry and the leaderboard task table
- :mod:`contracts.tables`     columns and fields of every table/record a stage writes for another
- :mod:`contracts.jsonl`      reading and appending JSON Lines, one way for every stage
- :mod:`contracts.settings`   typed stage configs: YAML / flags → validated dataclasses
- :mod:`contracts.errors`     the one exception type for a user's mistake
"""
