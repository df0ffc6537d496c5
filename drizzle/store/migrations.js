import journal from './meta/_journal.json';
import m0000 from './0000_partition.sql';
import m0001 from './0001_leaner_writes.sql';
import m0002 from './0002_deliveries_without_destination_index.sql';
import m0003 from './0003_without_rowid.sql';

  export default {
    journal,
    migrations: {
      m0000,
m0001,
m0002,
m0003
    }
  }
  