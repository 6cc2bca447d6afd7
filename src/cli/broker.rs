//! `selfheal broker`: an embedded broker in its own process, for trying
//! the live commands without Kafka and for long bench runs whose memory
//! figures must not include the broker's.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use selfheal::live::KafkaArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prefix of the topics to create.
    #[arg(long, default_value = "selfheal.")]
    pub topic_prefix: String,
    /// Partitions of each topic. The embedded broker keeps at most 100,000
    /// records or 5 MB per partition and drops the oldest beyond that, so
    /// spread a heavy load over many partitions.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.partitions >= 1,
        "--partitions must be at least 1 (got {})",
        a.partitions
    );
    let rt = super::live::runtime()?;
    let cluster = rdkafka::mocking::MockCluster::new(1).context("starting the embedded broker")?;
    let brokers = cluster.bootstrap_servers();
    let mut kafka = KafkaArgs::local(&brokers);
    kafka.topic_prefix = a.topic_prefix.clone();
    super::live::create_embedded_topics(&cluster, &kafka, a.partitions)?;
    eprintln!(
        "selfheal broker: librdkafka's mock cluster at {brokers}, topics {}* ({} partitions \
         each); in memory only, at most 100,000 records or 5 MB per partition; stop with \
         Ctrl-C or SIGTERM",
        a.topic_prefix, a.partitions
    );
    // The one line on standard output, as `scripts/broker.sh start` prints.
    println!("SELFHEAL_BROKERS={brokers}");
    std::io::stdout().flush().ok();
    let stop = super::live::stop_on_signal(&rt, "the topics and their records are dropped");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("selfheal broker: stopped");
    Ok(0)
}
