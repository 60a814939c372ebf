"""The `conceptkit` command line: argument parsing and the subcommands (build, select, llm, ls, search, inspect, card).
"""
