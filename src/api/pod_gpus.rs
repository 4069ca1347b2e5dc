//! How many GPUs (or any extended resource) a pod asks for, counted as the scheduler counts them. Pure, so
//! that the controller's cached pods and Kueue's pod templates are counted by the same rule without either
//! knowing the other's types.

/// What one container asks for: its request, or its limit when it sets no request; 0 when that is not a
/// whole number.
pub fn container_gpus(request: Option<&str>, limit: Option<&str>) -> u32 {
    request.or(limit).and_then(|q| q.parse().ok()).unwrap_or(0)
}

/// What a pod asks for: the sum over its containers, or its largest init container when that is larger
/// (init containers run one at a time, before the others).
pub fn pod_gpus(containers: impl IntoIterator<Item = u32>, init_containers: impl IntoIterator<Item = u32>) -> u32 {
    let main: u32 = containers.into_iter().sum();
    let init = init_containers.into_iter().max().unwrap_or(0);
    main.max(init)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_wins_over_a_limit_and_nonsense_counts_nothing() {
        assert_eq!(container_gpus(Some("2"), Some("4")), 2);
        assert_eq!(container_gpus(None, Some("4")), 4);
        assert_eq!(container_gpus(None, None), 0);
        assert_eq!(
            container_gpus(Some("half"), Some("4")),
            0,
            "a bad request is not replaced by the limit"
        );
        assert_eq!(container_gpus(Some("-1"), None), 0);
    }

    #[test]
    fn containers_add_up_and_the_largest_init_container_may_win() {
        assert_eq!(pod_gpus([2, 1], [1]), 3);
        assert_eq!(pod_gpus([2, 1], [4, 1]), 4);
        assert_eq!(pod_gpus([], []), 0);
    }
}
