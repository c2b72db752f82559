"""Small shared helpers: errors, atomic file outputs, devices and seeds, argument parsing, runs of
several processes under torchrun (distributed) and the opt-in --amp / --channels_last (precision)."""
