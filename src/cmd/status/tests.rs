use super::*;

#[test]
fn ages_read_in_the_two_largest_units() {
    assert_eq!(ago(0), "0 s");
    assert_eq!(ago(59), "59 s");
    assert_eq!(ago(60), "1 min");
    assert_eq!(ago(3599), "59 min");
    assert_eq!(ago(3600), "1 h");
    assert_eq!(ago(3600 + 20 * 60 + 5), "1 h 20 min");
    assert_eq!(ago(86400 * 2 + 4 * 3600 + 1), "2 d 4 h");
    assert_eq!(ago(86400), "1 d");
}

#[test]
fn missing_and_future_times_are_shown_as_such() {
    assert_eq!(when(None, 1_000), "-");
    assert_eq!(when(Some(0), 1_000), "-");
    let t = 1_795_000_000_000;
    let future = when(Some(t + 5_000), t);
    assert!(!future.contains("ago"), "{future}");
    assert!(when(Some(t - 12_500), t).ends_with(" (12 s ago)"));
}
