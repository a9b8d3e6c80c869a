"""The whole recipe from one file: `mobilellm-r1 run e2e/tiny_cpu`.

`config` reads an e2e recipe (stages in the paper's order, each one `mobilellm-r1` command with its
inputs and outputs), `plan` gives every stage a content key and decides what runs, `runner` runs
the stages as child processes with markers that make a killed run resumable, and `report` turns the
finished stages into `report.html` and `report.json`.
"""
