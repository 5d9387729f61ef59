// placeholder
// x
