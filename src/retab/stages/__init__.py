"""One module per pipeline stage, each with `main(argv=None)`; `retab <command>` dispatches here."""
