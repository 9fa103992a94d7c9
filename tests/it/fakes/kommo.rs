//! A fake Kommo (being written).
