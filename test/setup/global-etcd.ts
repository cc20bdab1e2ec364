// Placeholder: replaced by the managed-etcd global setup.
export default function setup(): void {}
