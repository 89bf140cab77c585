"""Study and proof tools beside the kit: they import lib, lib never imports them."""
