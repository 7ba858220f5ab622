"""The research pipeline: planner, searcher and synthesizer, orchestrated as one coroutine."""
