from retab.cli import main

raise SystemExit(main())
