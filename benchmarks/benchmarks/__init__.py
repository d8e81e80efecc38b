"""airspeed velocity benchmarks for fastmetric (see ``benchmarks/README.md``)."""
