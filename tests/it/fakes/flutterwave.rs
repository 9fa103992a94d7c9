//! A fake Flutterwave (being written).
