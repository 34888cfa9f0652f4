"""One module per provider type behind one small interface; `registry` maps types to them."""
