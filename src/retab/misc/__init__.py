"""Small shared helpers: errors, atomic file outputs, devices and seeds, argument parsing."""
