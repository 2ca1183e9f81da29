import sys

try:  # an interrupt while the command line itself is being imported ends cleanly too
    from divgen.cli import main
except KeyboardInterrupt:
    print("divgen: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
