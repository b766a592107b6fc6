// A fingerprinted asset: its name changes when its content does, so it is
// served with Cache-Control: immutable and a year's max-age.
document.title = "Strata example (" + location.host + ")";
