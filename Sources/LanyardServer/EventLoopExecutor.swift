import NIOCore

/// Runs a task's jobs on one NIO event loop: a connection's handlers, given it as their
/// preferred executor, run on the thread that reads and writes the connection, so a
/// request and its answer cross no thread (the audit writer's completion is the only
/// hand-off, back onto this loop). Code that blocks must not run here: work that takes
/// long goes to a thread pool (exe hashing, spawned commands), waits suspend.
final class EventLoopExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
